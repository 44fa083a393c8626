//! `POST /publish` bodies (`florete-tree/1`) from any caller the ACL lets
//! reach `config-publish`: never panic; the same items whatever pieces the
//! body arrives in; a tree that reads renders back (`push_file`) to a body
//! that reads to the same files, and to the very bytes it was read from when
//! those were written the way `push_file` writes (no leading zeros in lengths).
#![no_main]
use flor_vertex::http::tree::{self, Decoder, Item, TreeError};
use libfuzzer_sys::fuzz_target;

/// Feeds `body` in pieces of `chunk` bytes; returns (path, contents) of each file.
fn in_pieces(body: &[u8], chunk: usize) -> Result<Vec<(String, Vec<u8>)>, TreeError> {
    let mut dec = Decoder::new();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for piece in body.chunks(chunk) {
        let mut at = 0;
        loop {
            let (used, item) = dec.decode(&piece[at..])?;
            assert!(used <= piece.len() - at, "decoder claimed more than it was given");
            at += used;
            match item {
                None => {
                    assert_eq!(at, piece.len(), "None before the piece was used up");
                    break;
                }
                Some(Item::End) => return Ok(out),
                Some(Item::File { path, .. }) => out.push((path.to_string(), Vec::new())),
                Some(Item::Data { bytes, .. }) => match out.last_mut() {
                    Some(f) => f.1.extend_from_slice(bytes),
                    None => panic!("file contents before any file"),
                },
            }
        }
    }
    Err(TreeError::Truncated)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the body is split, the rest is the body.
    let Some((&split, body)) = data.split_first() else { return };
    let whole = tree::read_all(body);
    let pieces = in_pieces(body, usize::from(split).max(1));
    match (&whole, &pieces) {
        (Ok((entries, used)), Ok(files)) => {
            let entries: Vec<(String, Vec<u8>)> = entries
                .iter()
                .map(|(p, b)| (p.to_string(), b.to_vec()))
                .collect();
            assert_eq!(&entries, files);
            let mut again = tree::MAGIC.to_vec();
            for (path, contents) in &entries {
                tree::push_file(&mut again, path, contents);
            }
            again.extend_from_slice(tree::END);
            let (back, n) = tree::read_all(&again).expect("a rendered tree reads");
            assert_eq!(n, again.len());
            assert!(back.iter().map(|(p, b)| (p.to_string(), b.to_vec())).eq(entries.iter().cloned()));
            if !body[..*used].windows(7).any(|w| w.starts_with(b"file 0") && w[6].is_ascii_digit()) {
                assert_eq!(&again[..], &body[..*used]);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("whole {whole:?} and in pieces {pieces:?} disagree"),
    }
});
