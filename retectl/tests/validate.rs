#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl validate`: the example passes; each kind of mistake is reported
//! at the right `file:line`, and several mistakes are all listed in one run.

mod common;

use common::{retectl, text, Demo};

/// Runs validate on the demo copy; asserts failure; returns stderr.
fn fails(d: &Demo) -> String {
    let o = d.run(&["validate", d.repo_s()]);
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "validate passed but should fail:\n{out}\n{err}"
    );
    assert!(out.is_empty(), "problems go to stderr, stdout was {out:?}");
    err
}

fn has(err: &str, loc: &str, needle: &str) {
    assert!(
        err.lines()
            .any(|l| l.starts_with(loc) && l.contains(needle)),
        "expected a line starting {loc:?} containing {needle:?} in:\n{err}"
    );
}

#[test]
fn example_passes() {
    let o = retectl(&["validate", common::example().to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("ok: rete demo.flor version 1: 4 nodes, 3 users, 6 services"),
        "{out}"
    );
}

#[test]
fn example_with_ca_passes_cert_checks() {
    let d = Demo::with_ca();
    let (_, err) = text(&d.run(&["validate", d.repo_s()]));
    assert!(!err.contains("skipped"), "{err}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let d = Demo::new();
    d.edit(
        "nodes.yaml",
        "  - name: beta\n",
        "  - name: beta\n    listen: [unclosed\n",
    );
    let err = fails(&d);
    // The parser reports where it noticed the error, at or after the bad line.
    let l = d.line_of("nodes.yaml", "[unclosed");
    assert!(
        err.lines()
            .any(|x| (l..l + 4).any(|n| x.starts_with(&format!("nodes.yaml:{n}:")))),
        "{err}"
    );
}

#[test]
fn unknown_field_is_a_typo() {
    let d = Demo::new();
    d.edit(
        "services.yaml",
        "    upstream: 127.0.0.2:8080",
        "    upsteam: 127.0.0.2:8080",
    );
    let err = fails(&d);
    let l = d.line_of("services.yaml", "upsteam");
    has(&err, &format!("services.yaml:{l}:"), "upsteam");
}

#[test]
fn invalid_name() {
    let d = Demo::new();
    d.edit("users.yaml", "- name: carol", "- name: Carol");
    let err = fails(&d);
    has(
        &err,
        &format!("users.yaml:{}:", d.line_of("users.yaml", "Carol")),
        "user name \"Carol\"",
    );
    // The bad name is reported once, not again where nodes.yaml mentions it.
    assert!(!err.contains("unknown user \"Carol\""), "{err}");
}

#[test]
fn invalid_rete_name() {
    let d = Demo::new();
    d.edit("rete.yaml", "name: demo.flor", "name: Demo..flor");
    let err = fails(&d);
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "Demo..flor")),
        "rete name",
    );
}

#[test]
fn duplicate_names() {
    let d = Demo::new();
    d.edit(
        "users.yaml",
        "  - name: carol\n",
        "  - name: carol\n    role: echo-user\n  - name: carol\n",
    );
    d.edit(
        "groups.yaml",
        "  - name: web\n",
        "  - name: web\n  - name: web\n",
    );
    let err = fails(&d);
    let second = d
        .read("users.yaml")
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name: carol"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    has(
        &err,
        &format!("users.yaml:{second}:"),
        "duplicate user \"carol\"",
    );
    let second = d
        .read("groups.yaml")
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name: web"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    has(
        &err,
        &format!("groups.yaml:{second}:"),
        "duplicate group \"web\"",
    );
}

#[test]
fn reserved_names_must_be_present() {
    let d = Demo::new();
    d.edit(
        "roles.yaml",
        "  - name: node\n    groups: [config-read, metrics-write]\n",
        "",
    );
    d.edit(
        "groups.yaml",
        "  - name: config-write\n    services: [config-publish]\n",
        "",
    );
    d.edit(
        "roles.yaml",
        "groups: [config-read, config-write, infra]",
        "groups: [config-read, infra]",
    );
    let err = fails(&d);
    has(&err, "roles.yaml:1:", "reserved role \"node\" is missing");
    has(
        &err,
        "groups.yaml:1:",
        "reserved group \"config-write\" is missing",
    );
}

#[test]
fn reserved_groups_hold_the_config_services() {
    let d = Demo::new();
    d.edit(
        "groups.yaml",
        "    services: [config]\n",
        "    services: [metrics]\n",
    );
    let err = fails(&d);
    has(
        &err,
        &format!(
            "groups.yaml:{}:",
            d.line_of("groups.yaml", "name: config-read")
        ),
        "must contain service \"config\"",
    );
}

#[test]
fn an_operator_must_exist() {
    let d = Demo::new();
    d.edit(
        "users.yaml",
        "roles: [operator, wiki-reader]",
        "roles: [wiki-reader]",
    );
    let err = fails(&d);
    has(&err, "users.yaml:1:", "no user has role operator");
}

#[test]
fn references_resolve() {
    let d = Demo::new();
    d.edit(
        "roles.yaml",
        "services: [beta/tcp-echo]",
        "services: [tcp-echo]",
    );
    d.edit("users.yaml", "role: echo-user", "role: echo-usr");
    d.edit("services.yaml", "    node: alpha", "    node: alfa");
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, bob, carol, dave]",
    );
    d.edit("rete.yaml", "  node: mgmt01", "  node: mgmt02");
    let err = fails(&d);
    has(
        &err,
        &format!("roles.yaml:{}:", d.line_of("roles.yaml", "[tcp-echo]")),
        "unknown service \"tcp-echo\"",
    );
    assert!(
        err.contains("\"beta/tcp-echo\""),
        "hint for node-scoped names missing:\n{err}"
    );
    has(
        &err,
        &format!("users.yaml:{}:", d.line_of("users.yaml", "echo-usr")),
        "unknown role \"echo-usr\"",
    );
    has(
        &err,
        &format!("services.yaml:{}:", d.line_of("services.yaml", "alfa")),
        "unknown node \"alfa\"",
    );
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "dave")),
        "unknown user \"dave\"",
    );
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "mgmt02")),
        "unknown node \"mgmt02\"",
    );
}

#[test]
fn caller_socket_names_accounts() {
    let d = Demo::new();
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.2:8080",
        "upstream: 127.0.0.2:8080\n    caller_socket: {user: \"www data\", group: \"33\"}",
    );
    let err = fails(&d);
    has(
        &err,
        &format!("services.yaml:{}:", d.line_of("services.yaml", "www data")),
        "caller_socket user \"www data\": not an account name",
    );
    assert!(!err.contains("caller_socket group"), "{err}");
}

#[test]
fn ports_are_valid() {
    let d = Demo::new();
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.2:8080",
        "upstream: 127.0.0.2:0",
    );
    d.edit(
        "nodes.yaml",
        "listen: 127.0.0.3:7443",
        "listen: beta.local:7443",
    );
    let err = fails(&d);
    has(
        &err,
        &format!(
            "services.yaml:{}:",
            d.line_of("services.yaml", "127.0.0.2:0")
        ),
        "port 0",
    );
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "beta.local")),
        "not an ip:port",
    );
}

#[test]
fn ports_do_not_clash() {
    let d = Demo::new();
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.1:9101",
        "upstream: 127.0.0.1:7080",
    );
    d.edit(
        "nodes.yaml",
        "listen: 127.0.0.3:7443",
        "listen: 127.0.0.2:7443",
    );
    let err = fails(&d);
    has(
        &err,
        &format!(
            "services.yaml:{}:",
            d.line_of("services.yaml", "name: metrics-push")
        ),
        "clashes with service \"config\"",
    );
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: beta")),
        "clashes with node \"alpha\"",
    );
}

#[test]
fn hosting_nodes_listen() {
    let d = Demo::new();
    d.edit(
        "nodes.yaml",
        "  - name: beta\n    listen: 127.0.0.3:7443\n",
        "  - name: beta\n",
    );
    let err = fails(&d);
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: beta")),
        "has no listen address",
    );
}

#[test]
fn crypto_categories_are_known() {
    let d = Demo::new();
    d.edit("rete.yaml", "  ca: ecdsa-p256", "  ca: rsa-1024");
    d.edit("rete.yaml", "    mgmt: ed25519", "    mgmt: ed448");
    let err = fails(&d);
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "rsa-1024")),
        "crypto ca: unknown algorithm",
    );
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "ed448")),
        "crypto signers.mgmt: unknown algorithm",
    );
}

#[test]
fn version_is_positive() {
    let d = Demo::new();
    d.edit("rete.yaml", "version: 1", "version: 0");
    let err = fails(&d);
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "version: 0")),
        "version 0",
    );
}

#[test]
fn signer_named_in_rete_yaml_needs_its_cert() {
    let d = Demo::with_ca();
    d.edit(
        "rete.yaml",
        "mgmt_signers: [primary]",
        "mgmt_signers: [primary, spare]",
    );
    let err = fails(&d);
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "spare")),
        "certs/management-planes/spare.crt is missing",
    );
}

#[test]
fn certs_must_chain_to_the_ca() {
    let d = Demo::with_ca();
    let other = Demo::with_ca();
    std::fs::copy(
        other.repo.join("certs/management-planes/primary.crt"),
        d.repo.join("certs/management-planes/primary.crt"),
    )
    .unwrap();
    let err = fails(&d);
    has(
        &err,
        "certs/management-planes/primary.crt:1:",
        "does not chain to certs/ca.crt",
    );
}

#[test]
fn expired_certs_are_refused() {
    let d = Demo::with_ca();
    // Sign an already-expired signer certificate with the real CA key.
    let ca_pem = d.read("certs/ca.crt");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.keys.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://demo.flor/management-plane/old"
            .try_into()
            .unwrap(),
    )];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(d.repo.join("certs/management-planes/old.crt"), cert.pem()).unwrap();
    let err = fails(&d);
    has(
        &err,
        "certs/management-planes/old.crt:1:",
        "certificate expired at",
    );
}

#[test]
fn device_limits_are_checked_per_node() {
    let d = Demo::new();
    // 40 users on the laptop: more principals than a vertex holds, more SOCKS5 listeners than it binds.
    let names: Vec<String> = (0..40).map(|i| format!("u{i:02}")).collect();
    let mut users = d.read("users.yaml");
    for n in &names {
        users.push_str(&format!("  - name: {n}\n    role: wiki-reader\n"));
    }
    std::fs::write(d.repo.join("users.yaml"), users).unwrap();
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        &format!("users: [olga, bob, carol, {}]", names.join(", ")),
    );
    let err = fails(&d);
    let loc = format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: laptop"));
    has(
        &err,
        &loc,
        "node laptop: principals held is 44, over MAX_PRINCIPALS (32) by 12",
    );
    has(
        &err,
        &loc,
        "node laptop: SOCKS5 listeners is 44, over MAX_SOCKS_LISTENERS (16) by 28",
    );
}

#[test]
fn all_mistakes_are_listed_in_one_run() {
    let d = Demo::new();
    d.edit(
        "rete.yaml",
        "  tls_principals: ecdsa-p256",
        "  tls_principals: rsa",
    );
    d.edit("users.yaml", "role: echo-user", "role: nobody");
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.3:9000",
        "upstream: 127.0.0.3:99999",
    );
    d.edit("roles.yaml", "groups: [web]", "groups: [webb]");
    d.edit(
        "groups.yaml",
        "services: [config-publish]",
        "services: [config-publish, wikki]",
    );
    let err = fails(&d);
    has(
        &err,
        &format!("rete.yaml:{}:", d.line_of("rete.yaml", "tls_principals")),
        "unknown algorithm",
    );
    has(
        &err,
        &format!("users.yaml:{}:", d.line_of("users.yaml", "nobody")),
        "unknown role",
    );
    has(
        &err,
        &format!("services.yaml:{}:", d.line_of("services.yaml", "99999")),
        "not an ip:port",
    );
    has(
        &err,
        &format!("roles.yaml:{}:", d.line_of("roles.yaml", "webb")),
        "unknown group",
    );
    has(
        &err,
        &format!("groups.yaml:{}:", d.line_of("groups.yaml", "wikki")),
        "unknown service",
    );
    assert!(err.contains("5 problem(s)"), "{err}");
}

#[test]
fn new_writes_a_valid_template_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let o = retectl(&["new", dir.to_str().unwrap(), "--name", "home.example"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = retectl(&["validate", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("rete home.example"));
    let before = std::fs::read(dir.join("rete.yaml")).unwrap();
    let o = retectl(&["new", dir.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("refusing to overwrite"),
        "{:?}",
        text(&o)
    );
    assert_eq!(std::fs::read(dir.join("rete.yaml")).unwrap(), before);
}

/// The 1-based line of the `nth` (0-based) line of `file` containing `needle`.
fn nth_line(d: &Demo, file: &str, needle: &str, nth: usize) -> usize {
    d.read(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in {file}"))
        .0
        + 1
}

/// Appends users to users.yaml (`name`, optional `socks_port`), each with role echo-user.
fn add_users(d: &Demo, users: &[(&str, Option<u16>)]) {
    let mut text = d.read("users.yaml");
    for (name, port) in users {
        text.push_str(&format!("  - name: {name}\n    role: echo-user\n"));
        if let Some(p) = port {
            text.push_str(&format!("    socks_port: {p}\n"));
        }
    }
    std::fs::write(d.repo.join("users.yaml"), text).unwrap();
}

#[test]
fn socks_ports_stay_in_the_band() {
    let d = Demo::new();
    d.edit("users.yaml", "socks_port: 1080", "socks_port: 2000");
    d.edit(
        "nodes.yaml",
        "    users: [olga, bob, carol]\n",
        "    users: [olga, bob, carol]\n    socks_port: 80\n",
    );
    d.edit(
        "services.yaml",
        "    groups: [web]\n",
        "    groups: [web]\n    socks_port: 1180\n",
    );
    let err = fails(&d);
    for (file, needle, what) in [
        (
            "users.yaml",
            "socks_port: 2000",
            "socks_port 2000 of user \"bob\"",
        ),
        (
            "nodes.yaml",
            "socks_port: 80",
            "socks_port 80 of node \"laptop\"",
        ),
        (
            "services.yaml",
            "socks_port: 1180",
            "socks_port 1180 of service \"wiki\"",
        ),
    ] {
        has(
            &err,
            &format!("{file}:{}:", d.line_of(file, needle)),
            &format!("{what} is outside the SOCKS5 port band 1080-1179"),
        );
    }
}

#[test]
fn two_users_of_one_node_cannot_declare_one_port() {
    let d = Demo::new();
    // carol takes bob's port; they share the laptop.
    d.edit("users.yaml", "socks_port: 1081", "socks_port: 1080");
    let err = fails(&d);
    let bob = nth_line(&d, "users.yaml", "socks_port: 1080", 0);
    let carol = nth_line(&d, "users.yaml", "socks_port: 1080", 1);
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: laptop")),
        &format!(
            "node \"laptop\": user \"bob\" (socks_port at users.yaml:{bob}) and user \"carol\" \
             (socks_port at users.yaml:{carol}) would share SOCKS5 port 1080; change the \
             socks_port at users.yaml:{bob} or the one at users.yaml:{carol}; whoever uses 1080 \
             today should keep it"
        ),
    );
    assert!(err.contains("1 problem(s)"), "reported once:\n{err}");

    // Apart, they may share it: a rete has more users than the band has ports.
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, bob]",
    );
    d.edit(
        "nodes.yaml",
        "    listen: 127.0.0.3:7443\n",
        "    listen: 127.0.0.3:7443\n    users: [carol]\n",
    );
    let o = d.run(&["validate", d.repo_s()]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn a_node_with_two_users_without_ports_must_declare_them() {
    let d = Demo::new();
    add_users(&d, &[("dave", None), ("erin", None)]);
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, bob, carol, erin, dave]",
    );
    let err = fails(&d);
    let dave = d.line_of("users.yaml", "name: dave");
    let erin = d.line_of("users.yaml", "name: erin");
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: laptop")),
        &format!(
            "node \"laptop\" holds 2 principals with a SOCKS5 listener and no socks_port: \
             user \"dave\" (users.yaml:{dave}), user \"erin\" (users.yaml:{erin}); \
             only one may go without (it gets 1080)"
        ),
    );
    // The one of them on their own on another node is fine: only the laptop is reported.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("nodes.yaml")).count(),
        1,
        "{err}"
    );
}

#[test]
fn a_default_port_never_goes_to_a_second_principal() {
    let d = Demo::new();
    // dave is the laptop's one user without a port, so his default is 1080: bob's.
    add_users(&d, &[("dave", None)]);
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, bob, carol, dave]",
    );
    // carol declares the top of the band, which is node/laptop's default.
    d.edit("users.yaml", "socks_port: 1081", "socks_port: 1179");
    let err = fails(&d);
    let laptop = format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: laptop"));
    let bob = d.line_of("users.yaml", "socks_port: 1080");
    let dave = d.line_of("users.yaml", "name: dave");
    has(
        &err,
        &laptop,
        &format!(
            "node \"laptop\": user \"bob\" (socks_port at users.yaml:{bob}) and \
             user \"dave\" (users.yaml:{dave}, no socks_port: the default 1080) would share \
             SOCKS5 port 1080; declare a socks_port for user \"dave\", or change the one at \
             users.yaml:{bob}; whoever uses 1080 today should keep it"
        ),
    );
    let carol = d.line_of("users.yaml", "socks_port: 1179");
    has(
        &err,
        &laptop,
        &format!(
            "node \"laptop\": user \"carol\" (socks_port at users.yaml:{carol}) and \
             node \"laptop\" (no socks_port in nodes.yaml: the node default 1179) would share \
             SOCKS5 port 1179; declare a socks_port for node \"laptop\", or change the one at \
             users.yaml:{carol}"
        ),
    );
}

#[test]
fn a_node_port_may_not_meet_a_user_port() {
    let d = Demo::new();
    d.edit(
        "nodes.yaml",
        "    users: [olga, bob, carol]\n",
        "    users: [olga, bob, carol]\n    socks_port: 1082\n",
    );
    let err = fails(&d);
    let olga = d.line_of("users.yaml", "socks_port: 1082");
    let node = d.line_of("nodes.yaml", "socks_port: 1082");
    has(
        &err,
        &format!("nodes.yaml:{}:", d.line_of("nodes.yaml", "name: laptop")),
        &format!(
            "user \"olga\" (socks_port at users.yaml:{olga}) and node \"laptop\" (socks_port at \
             nodes.yaml:{node}) would share SOCKS5 port 1082; change the socks_port at \
             users.yaml:{olga} or the one at nodes.yaml:{node}"
        ),
    );
}

#[test]
fn a_single_user_node_needs_no_ports() {
    let d = Demo::new();
    // Without ports, the laptop's three users would be refused; with one user it is fine.
    for port in ["1080", "1081", "1082"] {
        d.edit("users.yaml", &format!("    socks_port: {port}\n"), "");
    }
    d.edit("nodes.yaml", "users: [olga, bob, carol]", "users: [carol]");
    let o = d.run(&["validate", d.repo_s()]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn json_output_lists_counts_or_every_problem_with_its_place() {
    let d = Demo::with_ca();
    let o = d.run(&["validate", d.repo_s(), "--json"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["rete"], "demo.flor");
    assert_eq!(v["nodes"], 4);
    assert_eq!(v["problems"], serde_json::json!([]));

    // compile --json: one entry per node written, the same counts a person reads.
    let out = d.tmp.path().join("out");
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{v}");
    let alpha = nodes.iter().find(|n| n["node"] == "alpha").unwrap();
    assert_eq!(alpha["version"], 1);
    assert!(alpha["acl_rows"].as_u64().unwrap() > 0, "{alpha}");
    assert!(alpha["dir"].as_str().unwrap().ends_with("alpha/mgmt"));

    // Two mistakes: both listed with file and line, nothing on stdout but the object.
    d.edit(
        "users.yaml",
        "roles: [operator, wiki-reader]",
        "roles: [operatr, wiki-reader]",
    );
    d.edit("services.yaml", "node: alpha", "node: alfa");
    for cmd in ["validate", "compile"] {
        let mut args = vec![cmd, d.repo_s(), "--json"];
        if cmd == "compile" {
            args.extend(["--all", "--out", out.to_str().unwrap()]);
        }
        let o = d.run(&args);
        assert!(!o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ok"], false);
        let p = v["problems"].as_array().unwrap();
        assert!(p.len() >= 2, "{cmd}: {v}");
        assert!(
            p.iter().any(|p| p["file"] == "users.yaml"
                && p["line"].as_u64().unwrap() > 1
                && p["message"].as_str().unwrap().contains("operatr")),
            "{cmd}: {v}"
        );
        assert!(p.iter().any(|p| p["file"] == "services.yaml"), "{cmd}: {v}");
    }
}

/// A rete can be valid name by name and still cut the management plane off
/// itself: nodes that may not reach `config` would never get the next
/// publish, nodes that may not reach `metrics-push` would be refused every
/// push, and without a user reaching `config-publish` nobody could publish the fix.
#[test]
fn management_plane_stays_reachable() {
    // The example with role node's groups replaced.
    let node_groups = |groups: &str| {
        let d = Demo::new();
        d.edit(
            "roles.yaml",
            "    groups: [config-read, metrics-write]",
            &format!("    groups: [{groups}]"),
        );
        d
    };
    let at = |d: &Demo, role: &str| {
        format!(
            "roles.yaml:{}:",
            d.line_of("roles.yaml", &format!("name: {role}"))
        )
    };
    let d = node_groups("metrics-write");
    let err = fails(&d);
    has(
        &err,
        &at(&d, "node"),
        "nodes alpha, beta, laptop, mgmt01 may not reach service \"config\" (role \"node\" does not grant it): \
         their agents could never fetch another configuration",
    );
    has(
        &err,
        &at(&d, "node"),
        "; add group config-read to role \"node\"",
    );
    assert!(!err.contains("metrics-push"), "{err}");

    let d = node_groups("config-read");
    d.edit(
        "roles.yaml",
        "    groups: [config-read, config-write, infra]",
        "    groups: [config-read, infra]",
    );
    let err = fails(&d);
    has(
        &err,
        &at(&d, "node"),
        "nodes alpha, beta, laptop, mgmt01 may not reach service \"metrics-push\" (role \"node\" does not grant it): \
         their agents push their counters there every 30 s and would be refused each time; \
         add group metrics-write to role \"node\"",
    );
    has(
        &err,
        &at(&d, "operator"),
        "no user may reach service \"config-publish\": nobody could publish, not even a fix; \
         add group config-write to role \"operator\"",
    );

    // A long list is cut: eight names, then how many more.
    let d = node_groups("metrics-write");
    let phones: String = (1..=6).map(|i| format!("  - name: phone{i}\n")).collect();
    let nodes = format!("{}{phones}", d.read("nodes.yaml"));
    std::fs::write(d.repo.join("nodes.yaml"), nodes).unwrap();
    has(
        &fails(&d),
        &at(&d, "node"),
        "nodes alpha, beta, laptop, mgmt01, phone1, phone2, phone3, phone4 and 2 more may not reach service \"config\"",
    );

    // Nodes granted it by a role of their own are not named; the one left is.
    let d = node_groups("config-read");
    d.edit(
        "roles.yaml",
        "  - name: wiki-reader\n",
        "  - name: monitored\n    groups: [metrics-write]\n  - name: wiki-reader\n",
    );
    for node in ["alpha", "beta", "laptop"] {
        d.edit(
            "nodes.yaml",
            &format!("  - name: {node}\n"),
            &format!("  - name: {node}\n    roles: [monitored]\n"),
        );
    }
    has(
        &fails(&d),
        &at(&d, "node"),
        "node mgmt01 may not reach service \"metrics-push\" (role \"node\" does not grant it): \
         its agent pushes its counters there every 30 s",
    );
}
