//! `retectl landing`: a static, zero-backend landing page for one rete.
//!
//! The page is what an operator hands to the rete's people next to their
//! bundles: what the rete is (its name is the trust domain), which services it
//! has under which `.rete` names, which roles reach them and which nodes serve
//! them, and the four steps from nothing to a first request (install flor,
//! `flor enroll <file>`, find the SOCKS5 port with `flor agent status`, curl).
//!
//! ```text
//! rete repo --validate--> Rete --render (pure)--> Page { index.html, landing.css }
//!                                                    | write_atomic (shell)
//!                                                    v
//!                                              <out>/index.html  <out>/landing.css
//! ```
//!
//! Properties the tests hold it to:
//!
//! - **Public facts only.** [`render`] sees the checked [`Rete`] and nothing
//!   else: no key directory, no bundle, no certificate. It prints names, roles
//!   and node names, and deliberately leaves out people (user names), upstream
//!   addresses and listen addresses, which a visitor does not need.
//! - **Zero backend.** Two files, no JavaScript, no external fonts or CDNs; a
//!   Content-Security-Policy meta tag forbids loading anything but the local
//!   stylesheet. Any static web server serves it, or a Florete service does.
//! - **Deterministic.** Same repo and flags, same bytes: no timestamps, every
//!   list comes from a `BTreeMap`/`BTreeSet`.
//! - **Escaped.** Every value that came from YAML goes through [`escape`].
//! - **Never into the repo.** `--out` inside the repo is refused: the page is
//!   derived output, like compiled artifacts, and does not belong in git.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use flor_vertex::identity::{self, Dialable, Kind};

use crate::checked::{Rete, SERVICE_CONFIG, SERVICE_CONFIG_PUBLISH, SERVICE_METRICS_PUSH};
use crate::fsutil::{self, FsError, MODE_PUBLIC};
use crate::validate::{self, ValidateError};

/// The page's HTML file name (what static servers serve for a directory).
pub const INDEX_FILE: &str = "index.html";
/// The stylesheet's file name, next to [`INDEX_FILE`].
pub const CSS_FILE: &str = "landing.css";
/// The SOCKS5 address of a single-rete device's one user when the rete
/// declares no `socks_port` for it ([`crate::ports::SOLE_DEFAULT`], port offset 0).
pub const EXAMPLE_SOCKS: &str = "127.0.0.1:1080";
const _: () = assert!(
    crate::ports::SOLE_DEFAULT == 1080,
    "EXAMPLE_SOCKS names the sole user's default port"
);

/// The stylesheet: system fonts only, so the page loads nothing from elsewhere.
pub const CSS: &str = include_str!("landing.css");

/// `retectl landing <repo> --out <dir>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo (directory holding rete.yaml).
    pub repo: PathBuf,
    /// Directory to write index.html and landing.css into (not inside the repo).
    #[arg(long)]
    pub out: PathBuf,
    /// Where people download flor (the release directory with install.sh); http(s) only.
    #[arg(long)]
    pub install_url: Option<String>,
}

/// Why `retectl landing` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    /// The repo does not validate; its problems were printed.
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// `--out` is the repo or inside it.
    #[error("output directory {out} is inside the repo {repo}: the page is derived output and does not belong in git; pass --out <dir outside the repo>")]
    OutInRepo {
        /// The resolved output directory.
        out: PathBuf,
        /// The resolved repo.
        repo: PathBuf,
    },
    /// `--install-url` is not an http(s) URL.
    #[error("--install-url {0:?}: expected an http:// or https:// URL")]
    InstallUrl(String),
    /// A file could not be written.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Choices that are not in the YAML.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Link to the flor release directory, if the operator publishes one.
    pub install_url: Option<String>,
}

/// The rendered page: two files' contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// `index.html`.
    pub html: String,
    /// `landing.css`.
    pub css: &'static str,
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One service as the page shows it.
struct Row {
    /// The service's own name (its last SPIFFE segment).
    name: String,
    /// The `.rete` hostname (ADR-0007 rendering).
    host: String,
    /// The SPIFFE ID.
    id: String,
    /// The hosting node.
    node: String,
    /// Roles that reach it, by name.
    roles: BTreeSet<String>,
    /// How many users reach it (picks the curl example; never printed).
    users: usize,
    /// Node-scoped services have a node label in their name.
    node_scoped: bool,
}

fn rows(rete: &Rete) -> Vec<(String, Row)> {
    let access = rete.access();
    let mut by_service: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (role, keys) in rete.role_grants() {
        for key in keys {
            by_service.entry(key).or_default().insert(role.to_owned());
        }
    }
    let mut rows: Vec<(String, Row)> = rete
        .services
        .iter()
        .map(|(key, svc)| {
            let id = &svc.id;
            let target = Dialable::service(
                id.trust_domain().clone(),
                id.node().cloned(),
                id.name().clone(),
            );
            let users = access
                .callers
                .get(key)
                .map_or(0, |c| c.iter().filter(|p| p.kind() == Kind::User).count());
            let row = Row {
                name: id.name().as_str().to_owned(),
                host: identity::render(&target).as_str().to_owned(),
                id: id.to_string(),
                node: svc.node.clone(),
                roles: by_service.remove(key.as_str()).unwrap_or_default(),
                users,
                node_scoped: id.node().is_some(),
            };
            (key.clone(), row)
        })
        .collect();
    // By service name, then node: `config` before `config-publish`, which
    // sorting the hostnames would not give ('-' sorts before '.').
    rows.sort_by(|a, b| (&a.1.name, &a.1.node).cmp(&(&b.1.name, &b.1.node)));
    rows
}

/// The config-server's own two services and the metrics push: listed apart, people do not use them.
fn is_infra(key: &str) -> bool {
    key == SERVICE_CONFIG || key == SERVICE_CONFIG_PUBLISH || key == SERVICE_METRICS_PUSH
}

/// The service the curl example uses: one people reach (most users first),
/// preferring rete-scoped names, then the first by name.
fn example(rows: &[(String, Row)]) -> Option<&Row> {
    rows.iter()
        .filter(|(k, _)| !is_infra(k))
        .map(|(_, r)| r)
        .min_by(|a, b| {
            (
                a.users == 0,
                a.node_scoped,
                std::cmp::Reverse(a.users),
                &a.host,
            )
                .cmp(&(
                    b.users == 0,
                    b.node_scoped,
                    std::cmp::Reverse(b.users),
                    &b.host,
                ))
        })
        .or_else(|| rows.first().map(|(_, r)| r))
}

/// What the two reserved roles mean, under each services table.
const RESERVED_ROLES_NOTE: &str = "<p class=\"note\">Reserved roles: <span class=\"role\">node</span> is held by every node's agent, <span class=\"role\">operator</span> by the rete's operators.</p>\n";

fn service_table(html: &mut String, rows: &[&Row]) {
    html.push_str(
        "<table>\n<thead><tr><th>Name</th><th>Served by node</th><th>Reached with role</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let roles: Vec<String> = r
            .roles
            .iter()
            .map(|role| format!("<span class=\"role\">{}</span>", escape(role)))
            .collect();
        let roles = if roles.is_empty() {
            "<span class=\"none\">no role yet</span>".to_owned()
        } else {
            roles.join(" ")
        };
        let _ = writeln!(
            html,
            "<tr><td><code class=\"host\">{}</code><br><span class=\"spiffe\">{}</span></td><td><span class=\"node\">{}</span></td><td>{}</td></tr>",
            escape(&r.host),
            escape(&r.id),
            escape(&r.node),
            roles
        );
    }
    html.push_str("</tbody>\n</table>\n");
}

/// Renders the page for a checked rete. Pure: no I/O, same input → same bytes.
pub fn render(rete: &Rete, opts: &Options) -> Page {
    let td = escape(rete.td.as_str());
    let rows = rows(rete);
    let people: Vec<&Row> = rows
        .iter()
        .filter(|(k, _)| !is_infra(k))
        .map(|(_, r)| r)
        .collect();
    let infra: Vec<&Row> = rows
        .iter()
        .filter(|(k, _)| is_infra(k))
        .map(|(_, r)| r)
        .collect();
    // Nodes that serve something, with what they serve.
    let mut nodes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, r) in &rows {
        nodes
            .entry(r.node.as_str())
            .or_default()
            .push(r.host.as_str());
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'self'; img-src 'self'\">
<meta name=\"generator\" content=\"retectl landing\">
<title>{td} · a Florete rete</title>
<link rel=\"stylesheet\" href=\"{CSS_FILE}\">
</head>
<body>
<header>
<div class=\"wrap\">
<p class=\"kicker\">Florete rete</p>
<h1>{td}</h1>
<p class=\"lede\"><strong>{td}</strong> is a private network of services: a Florete <em>rete</em>. Its name is its trust domain: every member has an identity <code>spiffe://{td}/…</code>, and every service a name ending in <code>.{td}.rete</code>, which works on your device through <code>flor</code> and nowhere else.</p>
</div>
</header>
<main class=\"wrap\">
"
    );

    // Services.
    let _ = write!(
        h,
        "<section id=\"services\">
<h2>Services</h2>
<p>Reach a service by its name through your SOCKS5 port. You can reach it if you hold one of its roles; your operator knows which roles you hold.</p>
"
    );
    if people.is_empty() {
        h.push_str("<p class=\"none\">No services are published yet.</p>\n");
    } else {
        service_table(&mut h, &people);
    }
    h.push_str(RESERVED_ROLES_NOTE);
    h.push_str("</section>\n");

    // Getting started.
    h.push_str("<section id=\"start\">\n<h2>Get started</h2>\n<ol class=\"steps\">\n");
    h.push_str("<li>\n<h3>Install flor</h3>\n");
    match &opts.install_url {
        Some(url) => {
            let _ = writeln!(
                h,
                "<p>Download the release directory from <a href=\"{0}\">{0}</a>; it holds <code>install.sh</code> and one <code>flor</code> per platform (and the Windows MSI).</p>",
                escape(url)
            );
        }
        None => h.push_str(
            "<p>Your operator gives you the flor release directory: <code>install.sh</code>, one <code>flor</code> per platform and the Windows MSI.</p>\n",
        ),
    }
    h.push_str(
        "<table class=\"compact\">
<tbody>
<tr><th>Linux, macOS (just you)</th><td><pre><code>sh install.sh --user</code></pre></td></tr>
<tr><th>Linux, macOS (whole machine)</th><td><pre><code>sudo sh install.sh</code></pre></td></tr>
<tr><th>OpenWrt router</th><td><pre><code>opkg install flor_&lt;version&gt;_&lt;arch&gt;.ipk</code></pre></td></tr>
<tr><th>Windows 10 (2004+), 11</th><td>run <code>flor-&lt;version&gt;-x64.msi</code>: it installs flor and the <em>Florete</em> service</td></tr>
</tbody>
</table>
<p class=\"note\">The installer picks the build for your CPU, downloads nothing, and can be run again safely. Details: <code>docs/install.md</code> in the Florete sources.</p>
</li>
",
    );
    let _ = write!(
        h,
        "<li>
<h3>Enroll with your bundle</h3>
<p>Your operator sends you a bundle: one file such as <code>laptop.bundle.json</code>. Enroll it; the flor service the installer set up starts your node within seconds, and enroll says when traffic flows:</p>
<pre><code>sudo flor enroll &lt;file&gt;</code></pre>
<ul class=\"variants\">
<li>just you (<code>install.sh --user</code>): <code>flor enroll &lt;file&gt;</code></li>
<li>OpenWrt: as root, <code>flor enroll &lt;file&gt;</code></li>
<li>Windows: in an administrator terminal, <code>flor enroll &lt;file&gt;</code></li>
<li>no service installed: <code>flor enroll &lt;file&gt;</code>, then keep <code>flor service run</code> running</li>
</ul>
<p class=\"note warn\">A bundle may hold your private keys. Keep it to yourself and delete it once enrolled; never put it on a web page or in git.</p>
</li>
<li>
<h3>Find your SOCKS5 port</h3>
<pre><code>sudo flor agent status --rete {td}</code></pre>
<p>Enroll printed these lines too (without <code>sudo</code> where you enrolled without it). Each identity on your device has a <code>socks5</code> line; use the <code>actual</code> address on the line ending in <code>spiffe://{td}/user/&lt;you&gt;</code>. With one rete and one person on the device it is usually <code>{EXAMPLE_SOCKS}</code>; your operator may have given you another port, the same on each of your devices. The port is yours and stays yours when others are added or removed: what you reach through it, you reach as yourself.</p>
</li>
"
    );
    if let Some(ex) = example(&rows) {
        let _ = write!(
            h,
            "<li>
<h3>Reach a service</h3>
<pre><code>curl --socks5-hostname {EXAMPLE_SOCKS} http://{host}/</code></pre>
<p><code>--socks5-hostname</code> hands the <code>.rete</code> name to flor, which knows it; any program that speaks SOCKS5 with remote name resolution works the same way (in a browser: a SOCKS v5 proxy with “proxy DNS”). A service you have no role for is refused.</p>
</li>
",
            host = escape(&ex.host)
        );
    }
    h.push_str("</ol>\n</section>\n");

    // Nodes.
    h.push_str(
        "<section id=\"nodes\">\n<h2>Nodes</h2>\n<p>The machines that serve the rete's services.</p>\n<ul class=\"nodes\">\n",
    );
    for (node, hosts) in &nodes {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|x| format!("<code>{}</code>", escape(x)))
            .collect();
        let config = if *node == rete.config_node {
            " <span class=\"role\">config-server</span>"
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<li><span class=\"node\">{}</span>{config}: {}</li>",
            escape(node),
            hosts.join(", ")
        );
    }
    h.push_str("</ul>\n</section>\n");

    // The config-server's services, for completeness.
    if !infra.is_empty() {
        h.push_str(
            "<section id=\"infra\">\n<h2>Rete infrastructure</h2>\n<p>Used by <code>flor</code> itself: nodes fetch their signed configuration from <code>config</code>, operators publish to <code>config-publish</code>. You do not need to call them.</p>\n",
        );
        service_table(&mut h, &infra);
        h.push_str(RESERVED_ROLES_NOTE);
        h.push_str("</section>\n");
    }

    let _ = write!(
        h,
        "</main>
<footer>
<div class=\"wrap\">
<p>Made by <code>retectl landing</code> from rete <strong>{td}</strong>, version {version}. This page holds public facts only: names, roles and nodes. No keys, no bundles, no addresses.</p>
</div>
</footer>
</body>
</html>
",
        version = rete.version
    );
    Page { html: h, css: CSS }
}

/// `path` made absolute and free of symlinks, `.` and `..`, even where it does
/// not exist yet: the longest existing prefix is canonicalized and the rest is
/// resolved lexically (there are no symlinks in what does not exist).
fn resolve(path: &Path) -> Result<PathBuf, FsError> {
    let parts: Vec<Component<'_>> = path.components().collect();
    let mut last_err = None;
    for split in (0..=parts.len()).rev() {
        let head: PathBuf = parts[..split].iter().collect();
        let head = if head.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            head
        };
        match head.canonicalize() {
            Ok(mut out) => {
                out.extend(&parts[split..]);
                return Ok(lexical(&out));
            }
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
    Err(fsutil::io_at(path)(e))
}

fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Runs `retectl landing`.
pub fn run(args: Args) -> Result<(), LandingError> {
    if let Some(url) = &args.install_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(LandingError::InstallUrl(url.clone()));
        }
    }
    let checked = validate::checked_or_report(&args.repo)?;
    let repo = args
        .repo
        .canonicalize()
        .map_err(fsutil::io_at(&args.repo))?;
    let out = resolve(&args.out)?;
    if out.starts_with(&repo) {
        return Err(LandingError::OutInRepo { out, repo });
    }
    let page = render(
        &checked.rete,
        &Options {
            install_url: args.install_url,
        },
    );
    // The stylesheet first: an index.html is never visible without its CSS.
    fsutil::write_atomic(&out.join(CSS_FILE), page.css.as_bytes(), MODE_PUBLIC)?;
    fsutil::write_atomic(&out.join(INDEX_FILE), page.html.as_bytes(), MODE_PUBLIC)?;
    println!(
        "landing page for rete {}: {} services -> {}",
        checked.rete.td,
        checked.rete.services.len(),
        out.join(INDEX_FILE).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("wiki.demo.flor.rete"), "wiki.demo.flor.rete");
    }

    #[test]
    fn lexical_resolves_dots() {
        assert_eq!(lexical(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(lexical(Path::new("/a/b/../../..")), PathBuf::from("/"));
    }

    #[test]
    fn resolve_handles_missing_tails() {
        let tmp = std::env::temp_dir().canonicalize().unwrap_or_default();
        let p = tmp.join("no-such-landing-dir/x/../y");
        assert_eq!(
            resolve(&p).ok(),
            Some(tmp.join("no-such-landing-dir").join("y"))
        );
        // `..` after a directory that does not exist: still lands in `tmp`.
        let p = tmp.join("no-such-landing-dir/../z");
        assert_eq!(resolve(&p).ok(), Some(tmp.join("z")));
    }

    #[test]
    fn css_loads_nothing_from_elsewhere() {
        for bad in ["url(", "@import", "http:", "https:", "//"] {
            assert!(!CSS.contains(bad), "landing.css contains {bad:?}");
        }
    }
}
