//! What the tests that run system tools share (included with `#[path]` by the `it` and
//! `faults` targets): running a command, a path as a string, and filling a filesystem to the
//! last byte.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Writes a filler file in `dir` until the filesystem refuses another byte (ENOSPC), in
/// ever smaller pieces, so that not one byte is left free whatever the block size.
pub fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).expect("the filler file");
    for piece in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0u8; piece];
        loop {
            match f.write(&buf) {
                Ok(n) if n > 0 => continue,
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
    }
    // On ext4 the blocks are reserved at write(2); the sync makes the fill final.
    f.sync_all().expect("sync the filler");
    filler
}
