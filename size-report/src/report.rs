//! The report: one row per board (stripped bytes against its flash budget) and,
//! per board, the sections, crates and symbols that take the most room.
//! Rendered as markdown for people and JSON for tools; both deterministic for
//! a given set of binaries.

use std::fmt::Write as _;
use std::path::Path;

use flor_vertex::file::{write_atomic, MODE_PUBLIC};
use serde::Serialize;

use crate::board::{Board, Link};
use crate::build::{BuildError, Built};
use crate::symbols;

/// How many crates and symbols each board lists.
const TOP_CRATES: usize = 15;
/// See `TOP_CRATES`.
const TOP_SYMBOLS: usize = 15;

/// One board's measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BoardSize {
    /// Board name.
    pub board: String,
    /// Rust target.
    pub target: String,
    /// The board in one line, and the hardware it stands for.
    pub summary: String,
    /// How it links.
    pub link: Link,
    /// Which build was measured (`release` ships).
    pub variant: String,
    /// Stripped binary size: what the flash holds.
    pub bytes: u64,
    /// The board's flash budget for flor.
    pub budget: u64,
    /// budget - bytes; negative when over.
    pub headroom: i64,
    /// Within budget.
    pub ok: bool,
    /// The board's RAM budget (documented, not measured under qemu-user).
    pub ram_budget_kib: u64,
    /// Oldest glibc the binary runs on (dynamic boards).
    pub min_glibc: Option<String>,
    /// Allocated sections stored in the file, largest first.
    pub sections: Vec<(String, u64)>,
    /// Symbol bytes per crate, largest first (top `TOP_CRATES`).
    pub crates: Vec<(String, u64)>,
    /// Largest symbols.
    pub symbols: Vec<symbols::Symbol>,
    /// Sum of all sized symbols; `bytes - symbol_bytes` is data in no symbol.
    pub symbol_bytes: u64,
}

/// Measures one built board.
pub fn measure(board: &Board, variant: &str, built: &Built) -> Result<BoardSize, BuildError> {
    let data =
        std::fs::read(&built.stripped).map_err(|e| BuildError::Io(built.stripped.clone(), e))?;
    let bytes = data.len() as u64;
    let syms = symbols::read(&built.symbols)?;
    let mut crates = symbols::by_crate(&syms);
    crates.truncate(TOP_CRATES);
    let symbol_bytes = syms.iter().map(|s| s.bytes).sum();
    let headroom = board.flash_budget_bytes as i64 - bytes as i64;
    Ok(BoardSize {
        board: board.name.clone(),
        target: board.target.clone(),
        summary: match board.hardware.get("soc").and_then(|v| v.as_str()) {
            Some(soc) => format!("{}; {soc}", board.summary),
            None => board.summary.clone(),
        },
        link: board.link,
        variant: variant.to_owned(),
        bytes,
        budget: board.flash_budget_bytes,
        headroom,
        ok: headroom >= 0,
        ram_budget_kib: board.ram_budget_kib,
        min_glibc: match board.link {
            Link::Dynamic => symbols::min_glibc(&data),
            Link::Static => None,
        },
        sections: symbols::sections(&built.stripped)?,
        crates,
        symbols: symbols::largest(&syms, TOP_SYMBOLS),
        symbol_bytes,
    })
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `rustc -V` of the cross compiler.
    pub rustc: String,
    /// Git commit measured.
    pub commit: String,
    /// Every board measured.
    pub boards: Vec<BoardSize>,
}

impl Report {
    /// True when every board fits its budget.
    pub fn ok(&self) -> bool {
        self.boards.iter().all(|b| b.ok)
    }

    /// The summary table alone (what the terminal shows).
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| board | target | link | shipped bytes | budget | headroom | used |\n");
        s.push_str("|---|---|---|---:|---:|---:|---:|\n");
        for b in &self.boards {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.1}%{} |",
                b.board,
                b.target,
                link_name(b.link),
                thousands(b.bytes as i64),
                thousands(b.budget as i64),
                thousands(b.headroom),
                b.bytes as f64 * 100.0 / b.budget as f64,
                if b.ok { "" } else { " **OVER**" }
            );
        }
        s
    }

    /// Full markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# flor size report\n\n");
        let _ = writeln!(
            s,
            "Written by `size-report report` at commit `{}` with `{}`. Bytes are the `flor` \
             that ships (what the flash holds): stripped, except on macOS, whose code \
             signature covers its symbols. Crates and symbols come from `nm --print-size` on \
             the same link before stripping (Mach-O: `llvm-nm`, each symbol sized up to the \
             next; see size-report/README.md).\n",
            self.commit, self.rustc
        );
        s.push_str(&self.table());
        for b in &self.boards {
            let _ = writeln!(s, "\n## {} ({}, {})\n", b.board, b.target, b.variant);
            let _ = writeln!(s, "{}.\n", b.summary);
            if let Some(g) = &b.min_glibc {
                let _ = writeln!(s, "Needs glibc >= {g}.\n");
            }
            s.push_str("Sections: ");
            let secs: Vec<String> = b
                .sections
                .iter()
                .take(8)
                .map(|(n, v)| format!("`{n}` {}", thousands(*v as i64)))
                .collect();
            s.push_str(&secs.join(", "));
            let _ = writeln!(
                s,
                ".\n\nSymbols account for {} bytes; the other {} are string literals, tables, \
                 headers and padding in no symbol.\n",
                thousands(b.symbol_bytes as i64),
                thousands(b.bytes as i64 - b.symbol_bytes as i64)
            );
            s.push_str("| crate | bytes | share of symbols |\n|---|---:|---:|\n");
            for (k, v) in &b.crates {
                let _ = writeln!(
                    s,
                    "| {k} | {} | {:.1}% |",
                    thousands(*v as i64),
                    *v as f64 * 100.0 / b.symbol_bytes.max(1) as f64
                );
            }
            s.push_str("\n| largest symbols | bytes |\n|---|---:|\n");
            for sym in &b.symbols {
                let _ = writeln!(
                    s,
                    "| `{}` | {} |",
                    sym.name.replace('|', "\\|"),
                    thousands(sym.bytes as i64)
                );
            }
        }
        s
    }

    /// Writes `report.md` and `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        // Atomic, so a reader (CI, a person) never sees half a report.
        write_atomic(
            &dir.join("report.json"),
            format!("{json}\n").as_bytes(),
            MODE_PUBLIC,
        )?;
        write_atomic(
            &dir.join("report.md"),
            self.markdown().as_bytes(),
            MODE_PUBLIC,
        )
    }
}

fn link_name(l: Link) -> &'static str {
    match l {
        Link::Static => "static",
        Link::Dynamic => "dynamic",
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bytes: u64, budget: u64) -> BoardSize {
        BoardSize {
            board: "openwrt-mipsel".into(),
            target: "mipsel-unknown-linux-musl".into(),
            summary: "OpenWrt router".into(),
            link: Link::Static,
            variant: "release".into(),
            bytes,
            budget,
            headroom: budget as i64 - bytes as i64,
            ok: bytes <= budget,
            ram_budget_kib: 16384,
            min_glibc: None,
            sections: vec![(".text".into(), 1000)],
            crates: vec![("quinn_proto".into(), 600), ("std".into(), 400)],
            symbols: vec![],
            symbol_bytes: 1000,
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(2_097_152), "2,097,152");
        assert_eq!(thousands(-1_048_576), "-1,048,576");
    }

    #[test]
    fn over_budget_is_marked_and_fails() {
        let r = Report {
            rustc: "rustc 1.96.0".into(),
            commit: "abc".into(),
            boards: vec![sample(1_000_000, 2_097_152), sample(2_200_000, 2_097_152)],
        };
        assert!(!r.ok());
        let t = r.table();
        assert!(
            t.contains("| 1,000,000 | 2,097,152 | 1,097,152 | 47.7% |"),
            "{t}"
        );
        assert!(t.contains("| -102,848 | 104.9% **OVER** |"), "{t}");
        let md = r.markdown();
        assert!(md.contains("| quinn_proto | 600 | 60.0% |"), "{md}");
    }

    #[test]
    fn json_has_the_table_fields() {
        let r = Report {
            rustc: "r".into(),
            commit: "c".into(),
            boards: vec![sample(10, 20)],
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["boards"][0]["headroom"], 10);
        assert_eq!(v["boards"][0]["link"], "static");
        assert_eq!(v["boards"][0]["crates"][0][0], "quinn_proto");
    }
}
