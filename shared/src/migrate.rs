//! The schema comes only from `migrations/`, embedded at build time and applied in
//! order by refinery (history in `refinery_schema_history`).

use crate::db::{Db, DbError};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// Apply every pending migration; returns the names of those applied now.
pub async fn run(db: &Db) -> Result<Vec<String>, MigrateError> {
    let mut client = db.dedicated_connection().await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}
