//! `payhook backup` and `payhook check`: a consistent copy of the SQLite database a running
//! node is using, with its master-key file, and a check of such a copy. Both only read the
//! live database (see `payhook_store::sqlite::backup`).

use crate::app::{key_file_for, read_key_file, write_private_file};
use crate::config::{Config, ServeArgs};
use anyhow::Context;
use payhook_store::seal::Sealer;
use std::path::{Path, PathBuf};

/// `payhook backup`: the database `serve` would use (same flags, variables and config file).
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The directory to create for the copy; it must not exist.
    #[arg(long)]
    pub to: PathBuf,
    /// Leave the master-key file out of the copy (keep the key elsewhere).
    #[arg(long)]
    pub without_key: bool,
}

/// `payhook check`: verifies a copy (or any payhook SQLite file) without changing it.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The SQLite file to check.
    #[arg(long)]
    pub database: PathBuf,
    /// The master key; without it, the key file beside the database (`FILE.key`).
    #[arg(long, env = "PAYHOOK_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

/// Copies the database and its key file into a new directory; on failure, removes what it
/// made and leaves the live database as it was.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args.serve)?;
    let source = sqlite_path(&config.database)?;
    let name = source.file_name().context("the database path names no file")?.to_owned();
    std::fs::create_dir(&args.to).map_err(|e| {
        let to = args.to.display();
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{to} exists already: back up into a new directory")
            }
            _ => anyhow::Error::new(e).context(format!("creating the backup directory {to}")),
        }
    })?;
    let written = write_copy(&config, &source, &args.to.join(&name), args.without_key).await;
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&args.to);
    }
    println!("{}", written?);
    Ok(())
}

async fn write_copy(
    config: &Config,
    source: &Path,
    target: &Path,
    without_key: bool,
) -> anyhow::Result<String> {
    let (src, dst) = (source.to_owned(), target.to_owned());
    let pages = tokio::task::spawn_blocking(move || payhook_store::sqlite::backup(&src, &dst))
        .await?
        .with_context(|| format!("backing up {} to {}", source.display(), target.display()))?;
    let key = if config.master_key.is_some() {
        "no key file: the master key is given by --master-key / PAYHOOK_MASTER_KEY, keep it \
         elsewhere"
            .to_owned()
    } else if without_key {
        format!("no key file (--without-key): keep {} elsewhere", key_file_for(source).display())
    } else {
        let copy = key_file_for(target);
        copy_key_file(&key_file_for(source), &copy)?;
        format!("with its key file {} (mode 0600)", copy.display())
    };
    Ok(format!("backed up {} ({pages} pages) to {}, {key}", source.display(), target.display()))
}

/// Copies the key file, created new with mode 0600 and synced.
fn copy_key_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let key =
        std::fs::read(from).with_context(|| format!("reading the key file {}", from.display()))?;
    write_private_file(to, &key)
}

/// Verifies a copy: prints what it found; fails unless the file is sound and the key opens it.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let sealer = match &args.master_key {
        Some(key) => Sealer::from_base64(key).map_err(|e| anyhow::anyhow!("master key: {e}"))?,
        None => read_key_file(&key_file_for(&args.database))?,
    };
    let path = args.database.clone();
    let report = tokio::task::spawn_blocking(move || payhook_store::sqlite::check(&path, &sealer))
        .await?
        .with_context(|| format!("checking {}", args.database.display()))?;
    println!(
        "{}: integrity {}, schema v{} (this payhook knows v{}), master key opens the secrets \
         of {} merchants",
        args.database.display(),
        report.integrity,
        report.schema_version,
        report.known_version,
        report.merchants_opened
    );
    anyhow::ensure!(
        report.is_sound(),
        "{} is not a sound payhook database",
        args.database.display()
    );
    Ok(())
}

fn sqlite_path(database: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !database.starts_with("postgres://") && !database.starts_with("postgresql://"),
        "payhook backup copies SQLite databases; for PostgreSQL use pg_dump or a base backup \
         (docs/operations.md)"
    );
    Ok(PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database)))
}
