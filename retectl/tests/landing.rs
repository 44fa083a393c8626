#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl landing`: the real binary writes the page for a copy of
//! `examples/my-rete`, real headless Chromium renders it (`--dump-dom`) and
//! photographs it into `target/landing/landing.png`, the CI artifact.
//! Also: same repo → same bytes, `--out` inside the repo refused, and no
//! secret (key, bundle content, upstream address, user name) on the page.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, walk, Demo};

/// Every service of the example, as its `.rete` name.
const HOSTS: [&str; 5] = [
    "wiki.demo.flor.rete",
    "tcp-echo.beta.demo.flor.rete",
    "metrics.demo.flor.rete",
    "config.demo.flor.rete",
    "config-publish.demo.flor.rete",
];
/// The enroll step's command block as Chromium serializes it (`<`, `>` escaped in text).
const ENROLL: &str = "<pre><code>sudo flor enroll &lt;file&gt;</code></pre>";
/// The SOCKS5 example: the most-used rete-scoped service through the first port.
const CURL: &str = "curl --socks5-hostname 127.0.0.1:1080 http://wiki.demo.flor.rete/";
/// The screenshot CI keeps (docs/landing.md).
const SCREENSHOT: &str = "target/landing/landing.png";
/// Screenshot size: a desktop browser window, tall enough for the services and steps.
const WINDOW: (u32, u32) = (1200, 1600);
/// Headless Chromium renders a local two-file page in a few seconds; this bounds a hang.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn landing(d: &Demo, out: &Path) -> std::process::Output {
    common::retectl(&["landing", d.repo_s(), "--out", out.to_str().unwrap()])
}

fn landing_ok(d: &Demo, out: &Path) {
    let o = landing(d, out);
    let (so, se) = text(&o);
    assert!(o.status.success(), "retectl landing failed:\n{so}\n{se}");
}

/// Kills Chromium (and so its children's session) if a test ends early.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs headless Chromium on `url` with `args`; returns stdout.
fn chromium(work: &Path, args: &[String], url: &str) -> String {
    let out_path = work.join("chromium.stdout");
    let err_path = work.join("chromium.stderr");
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start;
    // the page is our own two files and loads nothing else (CSP).
    // A private profile, so runs never share or lock ~/.config/chromium.
    let child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!(
            "--user-data-dir={}",
            work.join("chromium-profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): install it with ci/setup.sh (Debian package chromium)")
        });
    let mut b = Browser(child);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = b.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < CHROMIUM_TIMEOUT,
            "chromium did not finish within {CHROMIUM_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = fs::read_to_string(&out_path).unwrap();
    assert!(
        status.success(),
        "chromium {args:?} failed: {status}\n{}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    stdout
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn renders_in_headless_chromium_with_services_and_enroll_command() {
    let d = Demo::new();
    let site = d.tmp.path().join("site");
    landing_ok(&d, &site);

    let mut files: Vec<String> = walk(&site)
        .iter()
        .map(|p| p.strip_prefix(&site).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["index.html", "landing.css"]);

    let url = format!("file://{}", site.join("index.html").display());
    let dom = chromium(d.tmp.path(), &["--dump-dom".into()], &url);
    // Chromium's serialization of the live DOM, not our file echoed back.
    assert!(dom.contains("<body>"), "no DOM from chromium:\n{dom}");
    assert!(
        dom.contains("<h1>demo.flor</h1>"),
        "rete name missing:\n{dom}"
    );
    for host in HOSTS {
        assert!(
            dom.contains(&format!("<code class=\"host\">{host}</code>")),
            "service {host} missing from the rendered page:\n{dom}"
        );
    }
    for needle in [
        ENROLL,
        CURL,
        "flor agent status --rete demo.flor",
        "sh install.sh --user",
        "<code>flor-&lt;version&gt;-x64.msi</code>",
        // Served by, and reached with:
        "<span class=\"node\">alpha</span>",
        "<span class=\"role\">wiki-reader</span>",
        "<span class=\"role\">echo-user</span>",
    ] {
        assert!(dom.contains(needle), "{needle:?} missing:\n{dom}");
    }
    // Zero backend: nothing to run, nothing fetched from elsewhere.
    for bad in ["<script", "http://fonts", "https://", "@import"] {
        assert!(!dom.contains(bad), "{bad:?} on the page:\n{dom}");
    }

    let shot = workspace().join(SCREENSHOT);
    fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&shot);
    chromium(
        d.tmp.path(),
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            "--hide-scrollbars".into(),
        ],
        &url,
    );
    let png = fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert_eq!(png_size(&png), WINDOW);
}

#[test]
fn same_repo_same_bytes_and_no_secrets() {
    // With the PKI made and a Flow A bundle issued, so there are secrets to leak.
    let d = Demo::with_ca();
    let bundle = d.tmp.path().join("laptop.bundle.json");
    d.issue_bundle("laptop", None, &bundle);
    let a = d.tmp.path().join("a");
    let b = d.tmp.path().join("b");
    landing_ok(&d, &a);
    landing_ok(&d, &b);
    for f in ["index.html", "landing.css"] {
        assert_eq!(
            fs::read(a.join(f)).unwrap(),
            fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
    // Running again over an existing page replaces it in place.
    landing_ok(&d, &a);
    assert_eq!(
        fs::read(a.join("index.html")).unwrap(),
        fs::read(b.join("index.html")).unwrap()
    );

    let page = fs::read_to_string(a.join("index.html")).unwrap();
    assert!(page.contains("wiki.demo.flor.rete"));
    let bundle_json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&bundle).unwrap()).unwrap();
    let mut secrets: Vec<String> = Vec::new();
    for p in bundle_json["principals"].as_array().unwrap() {
        for field in ["key_pem", "cert_pem"] {
            let pem = p[field].as_str().unwrap();
            // Every base64 line of every key and certificate in the bundle.
            secrets.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 16)
                    .map(str::to_owned),
            );
        }
    }
    secrets.push(
        bundle_json["mgmt_signers"][0]["key"]
            .as_str()
            .unwrap()
            .into(),
    );
    assert!(secrets.len() > 20, "the bundle should hold keys and certs");
    for s in &secrets {
        assert!(
            !page.contains(s.as_str()),
            "bundle material on the page: {s}"
        );
    }
    for bad in [
        "PRIVATE KEY",
        "BEGIN",
        // Upstreams and listen addresses: not for visitors.
        "127.0.0.2:8080",
        "127.0.0.1:7443",
        "127.0.0.3:9000",
        // People: the page names roles, never users.
        "olga",
        "carol",
        "user/bob",
    ] {
        assert!(!page.contains(bad), "{bad:?} on the page");
    }
}

#[test]
fn refuses_to_write_into_the_repo() {
    let d = Demo::new();
    let before = walk(&d.repo);
    for out in [
        d.repo.join("site"),
        d.repo.clone(),
        d.tmp.path().join("elsewhere/../repo/www"),
    ] {
        let o = landing(&d, &out);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "wrote into the repo via {out:?}");
        assert!(
            err.contains("inside the repo") && err.contains("--out <dir outside the repo>"),
            "unhelpful error: {err}"
        );
    }
    assert_eq!(walk(&d.repo), before, "the repo changed");
    assert!(!d.repo.join("site").exists());
}

#[test]
fn refuses_an_invalid_repo_and_a_script_url() {
    let d = Demo::new();
    let out = d.tmp.path().join("site");
    let o = common::retectl(&[
        "landing",
        d.repo_s(),
        "--out",
        out.to_str().unwrap(),
        "--install-url",
        "javascript:alert(1)",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("expected an http:// or https:// URL"));
    assert!(!out.exists());

    // An operator's URL is text from outside too: escaped into the link.
    let o = common::retectl(&[
        "landing",
        d.repo_s(),
        "--out",
        out.to_str().unwrap(),
        "--install-url",
        "https://dl.example/flor/?v=1&a=\"><b>",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let page = fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("<a href=\"https://dl.example/flor/?v=1&amp;a=&quot;&gt;&lt;b&gt;\">"),
        "install URL not escaped"
    );
    fs::remove_dir_all(&out).unwrap();

    d.edit("services.yaml", "node: alpha", "node: nowhere");
    let o = landing(&d, &out);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("services.yaml:"),
        "no file:line problem: {err}"
    );
    assert!(!out.exists(), "wrote a page for an invalid repo");
}
