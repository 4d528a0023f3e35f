//! ARCHITECTURE.md's first invariants, checked on the source tree: payhook-core depends on no
//! I/O crate and reads neither the clock nor an RNG outside `clock.rs`; SQL appears only in
//! payhook-store; no source file outgrows 800 lines.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The `[dependencies]` of a workspace crate, with those of the payhook crates it depends on.
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
        .expect("manifest");
    let manifest: toml::Table = manifest.parse().expect("TOML");
    let deps = manifest.get("dependencies").and_then(|d| d.as_table()).cloned();
    let mut all = Vec::new();
    for name in deps.unwrap_or_default().keys() {
        all.push(name.clone());
        if name.starts_with("payhook-") {
            all.extend(dependencies(name));
        }
    }
    all
}

#[test]
fn core_depends_on_no_io_crate() {
    const IO: &[&str] = &[
        "tokio",
        "hyper",
        "hyper-util",
        "reqwest",
        "axum",
        "tower",
        "mio",
        "socket2",
        "rusqlite",
        "tokio-postgres",
        "deadpool-postgres",
        "rand",
        "getrandom",
        "uuid",
    ];
    let deps = dependencies("payhook-core");
    let io: Vec<&String> = deps.iter().filter(|d| IO.contains(&d.as_str())).collect();
    assert!(io.is_empty(), "payhook-core depends on I/O crates: {io:?}");
    assert!(deps.iter().any(|d| d == "serde"), "the manifest was read: {deps:?}");
}

#[test]
fn core_reads_no_clock_rng_file_or_socket_outside_clock_rs() {
    // `std::net`'s address types are plain data; its sockets and lookups are I/O.
    const FORBIDDEN: &[&str] = &[
        "SystemTime::now",
        "Instant::now",
        "std::fs",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "ToSocketAddrs",
        "thread_rng",
        "OsRng",
    ];
    let src = root().join("crates/payhook-core/src");
    let mut found = Vec::new();
    for file in rust_files(&src) {
        if file.ends_with("clock.rs") {
            continue; // the one wall-clock reader, injected behind `Clock`
        }
        let text = std::fs::read_to_string(&file).expect("source");
        for word in FORBIDDEN.iter().filter(|w| text.contains(**w)) {
            found.push(format!("{}: {word}", file.display()));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// A line that reads as SQL: a statement keyword written the way the stores write SQL.
fn looks_like_sql(line: &str) -> bool {
    let statement = ["INSERT INTO ", "DELETE FROM ", "CREATE TABLE ", "CREATE INDEX "];
    let select = line.contains("SELECT ") && line.contains(" FROM ");
    let update = line.find("UPDATE ").is_some_and(|i| line[i..].contains(" SET "));
    select || update || statement.iter().any(|s| line.contains(s))
}

#[test]
fn sql_appears_only_in_payhook_store() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("crates")) {
        let this_test = file.ends_with("tests/it/architecture.rs");
        if this_test || file.components().any(|c| c.as_os_str() == "payhook-store") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        for (n, line) in text.lines().enumerate().filter(|(_, l)| looks_like_sql(l)) {
            found.push(format!("{}:{}: {line}", file.display(), n + 1));
        }
    }
    assert!(found.is_empty(), "SQL outside payhook-store: {found:#?}");
    assert!(looks_like_sql("SELECT id FROM deliveries") && looks_like_sql("UPDATE x SET y = 1"));
}

#[test]
fn no_source_file_passes_800_lines() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("crates")) {
        let is_src = file.components().any(|c| c.as_os_str() == "src");
        if !is_src || file.ends_with("bench.rs") {
            continue; // the bench is one long script of phases
        }
        let lines = std::fs::read_to_string(&file).expect("source").lines().count();
        if lines > 800 {
            long.push(format!("{}: {lines}", file.display()));
        }
    }
    assert!(long.is_empty(), "split these: {long:#?}");
}
