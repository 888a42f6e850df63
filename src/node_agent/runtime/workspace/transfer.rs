//! The two HTTP calls of a workspace: GET a version's archive, PUT the next one. Both URLs are
//! presigned, so the signature in them is a credential until it expires: they never reach a log or an
//! error (reqwest names the URL in its errors; `without_url` drops it).

use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use tokio::io::AsyncWriteExt;

use super::super::failure::Failure;

/// The content type the gateway signed into the upload URL; any other gets a 403 from S3.
pub const ARCHIVE_CONTENT_TYPE: &str = "application/zstd";

/// Why there was no HTTP status.
fn reason(e: reqwest::Error, what: &str) -> &'static str {
    let why = if e.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    };
    tracing::warn!(error = %e.without_url(), "workspace {what} failed");
    why
}

/// Writes the body of a GET of `url` to a new file `to`, refusing more than `max_bytes`.
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    to: &Path,
    max_bytes: u64,
    timeout: Duration,
) -> Result<(), Failure> {
    let failed = |why: &str| Failure::WorkspaceDownloadFailed(why.to_string());
    let mut response = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| failed(reason(e, "download")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(&status.as_u16().to_string()));
    }
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(failed("too_large"));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .await
        .map_err(|_| failed("io"))?;
    let mut written = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(reason(e, "download")))?
    {
        written = written.saturating_add(chunk.len() as u64);
        if written > max_bytes {
            return Err(failed("too_large"));
        }
        file.write_all(&chunk).await.map_err(|_| failed("io"))?;
    }
    file.flush().await.map_err(|_| failed("io"))?;
    Ok(())
}

/// PUTs the file `archive` to `url`; the ETag of the stored object, without its quotes, if the
/// store sent one.
pub async fn upload(
    http: &reqwest::Client,
    url: &str,
    archive: &Path,
    timeout: Duration,
) -> Result<Option<String>, Failure> {
    let failed = |why: &str| Failure::WorkspaceUploadFailed(why.to_string());
    let file = tokio::fs::File::open(archive)
        .await
        .map_err(|_| failed("io"))?;
    let length = file.metadata().await.map_err(|_| failed("io"))?.len();
    // An explicit length: S3 refuses a chunked PUT to a presigned URL.
    let response = http
        .put(url)
        .header(CONTENT_TYPE, ARCHIVE_CONTENT_TYPE)
        .header(CONTENT_LENGTH, length)
        .body(reqwest::Body::from(file))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| failed(reason(e, "upload")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(&status.as_u16().to_string()));
    }
    Ok(response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        })
        .filter(|v| !v.is_empty()))
}
