//! Stores under test: a temp-file SQLite store, or a PostgreSQL store in a fresh schema that
//! is dropped when the test ends.

use payhook_store::postgres::{drop_schema, PgStore};
use payhook_store::seal::Sealer;
use payhook_store::sqlite::SqliteStore;
use payhook_store::Store;
use std::sync::Arc;

/// The server the PostgreSQL cases use; present on every machine here, CI included.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("PAYHOOK_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A store and whatever must live (or be cleaned up) as long as it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _cleanup: Cleanup,
}

enum Cleanup {
    /// The SQLite file's directory, removed on drop.
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema {
        url: String,
        schema: String,
    },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Cleanup::Schema { url, schema } = self else { return };
        let (url, schema) = (url.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread
        // with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(drop_schema(&url, &schema)).map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test schema: {dropped:?}");
        }
    }
}

pub fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("payhook.db"), Sealer::random())
        .expect("open SQLite store");
    TestStore { store: Arc::new(store), _cleanup: Cleanup::Dir(dir) }
}

/// A fresh schema name, unique per test so tests run in parallel.
pub fn fresh_schema() -> String {
    payhook_store::mint_schema_name("payhook_t_")
}

pub async fn postgres() -> TestStore {
    let url = database_url();
    let schema = fresh_schema();
    let store = match PgStore::connect(&url, Some(&schema), Sealer::random()).await {
        Ok(s) => s,
        Err(e) => panic!(
            "the PostgreSQL conformance tests need a server at {url} \
             (set PAYHOOK_TEST_DATABASE_URL to use another): {e}"
        ),
    };
    TestStore { store: Arc::new(store), _cleanup: Cleanup::Schema { url, schema } }
}
