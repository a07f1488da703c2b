//! The token cache file: one small JSON document per tenant and app.
//!
//! Invariants: the file is only ever replaced whole ([`hunter_core::fs::write_atomically`]: temp
//! file in the same directory, fsync, rename, fsync of the directory), so a crash leaves the old or the new cache, never half of
//! one; it is created with mode 0600; a rotated refresh token is on disk before the access token
//! that came with it is used.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuthError, Secret};

/// What `hunter auth login` stores and every later run reads and refreshes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCacheFile {
    /// Tenant the tokens were issued for; a cache for another tenant is not used.
    pub tenant: String,
    /// App (client) id the tokens were issued to; refresh tokens are bound to it.
    pub client_id: String,
    /// Scope requested on refresh (`.../.default offline_access`).
    pub scope: String,
    /// Bearer token for the Referrals API.
    pub access_token: Secret,
    /// When `access_token` stops working, from the reply's `expires_in`.
    #[serde(with = "time::serde::rfc3339")]
    pub access_token_expires_at: OffsetDateTime,
    /// Newest refresh token (Entra rotates it on every use).
    pub refresh_token: Secret,
    /// When `refresh_token` was issued: Entra expires it after 90 days without use.
    #[serde(with = "time::serde::rfc3339")]
    pub refresh_token_obtained_at: OffsetDateTime,
    /// Signed-in user (`preferred_username` or `upn` of the id token), for `hunter auth status`.
    #[serde(default, alias = "account_upn")]
    pub account: Option<String>,
}

impl TokenCacheFile {
    /// Reads the cache; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, AuthError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(cache_error(path, source)),
        };
        warn_if_readable_by_others(path);
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            // serde_json's message can quote a value, which could be a token: report the place.
            let detail = format!(
                "not a valid token cache ({:?} error at line {} column {}): run `hunter auth login`",
                error.classify(),
                error.line(),
                error.column()
            );
            cache_error(path, io::Error::new(io::ErrorKind::InvalidData, detail))
        })
    }

    /// Writes the cache atomically with mode 0600, creating missing parent directories with
    /// mode 0700 (the default lives in a per-user state directory no one else may list).
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|error| cache_error(path, io::Error::other(error.to_string())))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|source| cache_error(path, source))?;
        }
        hunter_core::fs::write_atomically(path, &json).map_err(|source| cache_error(path, source))
    }
}

fn cache_error(path: &Path, source: io::Error) -> AuthError {
    AuthError::Cache {
        path: path.to_path_buf(),
        error: source,
    }
}

/// Creates `dir` and its missing parents with mode 0700; existing directories are left as
/// they are (an operator's choice).
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "token cache is readable by other users: chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenCacheFile {
        TokenCacheFile {
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            scope: "https://api.partner.microsoft.com/.default offline_access".into(),
            access_token: Secret::new("at-very-secret"),
            access_token_expires_at: time::macros::datetime!(2024-05-01 10:00:00.123 UTC),
            refresh_token: Secret::new("rt-very-secret"),
            refresh_token_obtained_at: time::macros::datetime!(2024-05-01 09:00:00 UTC),
            account: Some("ops@contoso.example".into()),
        }
    }

    #[test]
    fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("tokens.json");
        assert_eq!(TokenCacheFile::load(&path).unwrap(), None);
        sample().save(&path).unwrap();
        sample().save(&path).unwrap(); // replacing works too
        assert_eq!(TokenCacheFile::load(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // The directory it created is private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700);
        }
    }

    #[test]
    fn debug_redacts_tokens() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("[redacted]"));
    }

    #[test]
    fn corrupt_cache_error_does_not_quote_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        fs::write(
            &path,
            r#"{"tenant": "t", "access_token": 5, "refresh_token": "rt-leak"}"#,
        )
        .unwrap();
        let error = TokenCacheFile::load(&path).unwrap_err().to_string();
        assert!(!error.contains("rt-leak"), "{error}");
        assert!(error.contains("hunter auth login"), "{error}");
    }
}
