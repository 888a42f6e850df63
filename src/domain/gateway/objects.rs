//! Workspace snapshot objects when no S3-compatible store is configured (the single-node default): the
//! gateway keeps them in a local directory and hands executors time-limited HMAC-signed GET/PUT URLs on
//! its own listener that behave like S3 presigned URLs: the method, the object key, the content type
//! (PUT: `application/zstd`) and the expiry are signed; a bad or expired signature is a 403; an object is
//! written whole or not at all (a temporary file renamed into place).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::platform::crypto;

/// The content type every snapshot is uploaded with.
pub const CONTENT_TYPE: &str = "application/zstd";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("REQUEST_EXPIRED")]
    Expired,
    #[error("SIGNATURE_DOES_NOT_MATCH")]
    BadSignature,
    #[error("NO_SUCH_KEY")]
    NotFound,
    #[error("ENTITY_TOO_LARGE")]
    TooLarge,
    #[error("object store: {0}")]
    Io(String),
}

pub struct LocalObjects {
    dir: PathBuf,
    /// Where executors reach this gateway over HTTP (`http://host:port`).
    base_url: String,
    key: Vec<u8>,
    expires: Duration,
    pub max_bytes: u64,
}

/// `workspaces/<orgId>/<workspaceId>/v<n>.tar.zst`: the only keys the gateway plans, so a URL can never
/// name a path outside the store.
pub fn valid_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let [root, org, ws, file] = parts.as_slice() else {
        return false;
    };
    *root == "workspaces"
        && uuid::Uuid::parse_str(org).is_ok()
        && uuid::Uuid::parse_str(ws).is_ok()
        && file
            .strip_prefix('v')
            .and_then(|f| f.strip_suffix(".tar.zst"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl LocalObjects {
    /// `secret` keys the URL signatures (the gateway derives it from its service token, which every
    /// instance shares and production requires to be set).
    pub fn new(
        dir: PathBuf,
        base_url: String,
        secret: &[u8],
        expires: Duration,
        max_bytes: u64,
    ) -> Self {
        Self {
            dir,
            base_url: base_url.trim_end_matches('/').to_string(),
            key: crypto::hmac_sha256(secret, b"vespid workspace object urls v1"),
            expires,
            max_bytes,
        }
    }

    fn signature(&self, method: &str, key: &str, content_type: &str, expires: i64) -> String {
        let msg = format!("{method}\n{key}\n{content_type}\n{expires}");
        hex::encode(crypto::hmac_sha256(&self.key, msg.as_bytes()))
    }

    fn presign(&self, method: &str, key: &str, content_type: &str) -> String {
        let expires = chrono::Utc::now().timestamp() + self.expires.as_secs() as i64;
        let sig = self.signature(method, key, content_type, expires);
        format!(
            "{}/workspace-objects/{key}?expires={expires}&signature={sig}",
            self.base_url
        )
    }

    pub fn presign_get(&self, key: &str) -> String {
        self.presign("GET", key, "")
    }

    pub fn presign_put(&self, key: &str) -> String {
        self.presign("PUT", key, CONTENT_TYPE)
    }

    /// Checks a request's signature (constant time) and expiry.
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        content_type: &str,
        expires: i64,
        signature: &str,
    ) -> Result<(), ObjectError> {
        if !valid_key(key) {
            return Err(ObjectError::BadSignature);
        }
        let expected = self.signature(method, key, content_type, expires);
        if !crypto::ct_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err(ObjectError::BadSignature);
        }
        if chrono::Utc::now().timestamp() > expires {
            return Err(ObjectError::Expired);
        }
        Ok(())
    }

    pub fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        if !valid_key(key) {
            return Err(ObjectError::NotFound);
        }
        Ok(self.dir.join(key))
    }

    /// Whether the object was uploaded.
    pub async fn exists(&self, key: &str) -> bool {
        match self.path_of(key) {
            Ok(p) => tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file()),
            Err(_) => false,
        }
    }

    /// A temporary file beside where `key` goes, to rename into place once complete.
    pub async fn staging(&self, key: &str) -> Result<(PathBuf, PathBuf), ObjectError> {
        let path = self.path_of(key)?;
        let parent = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ObjectError::Io(e.to_string()))?;
        let tmp = parent.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        Ok((tmp, path))
    }
}

/// An S3-compatible store (`WORKSPACE_S3_*`): what several gateway machines share. Executors upload and
/// download through presigned URLs; the gateway only signs and checks that an object exists.
pub struct S3Objects {
    bucket: Box<s3::Bucket>,
    expires: u32,
}

impl S3Objects {
    /// A custom endpoint (MinIO, moto, R2, …) is addressed path-style.
    pub fn new(
        bucket: &str,
        region: &str,
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        expires: Duration,
    ) -> Result<Self, ObjectError> {
        let region = if endpoint.is_empty() {
            region
                .parse::<s3::Region>()
                .map_err(|e| ObjectError::Io(e.to_string()))?
        } else {
            s3::Region::Custom {
                region: region.to_string(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
            }
        };
        let credentials = if access_key.is_empty() {
            s3::creds::Credentials::default()
        } else {
            s3::creds::Credentials::new(Some(access_key), Some(secret_key), None, None, None)
        }
        .map_err(|e| ObjectError::Io(e.to_string()))?;
        let mut bucket = s3::Bucket::new(bucket, region, credentials)
            .map_err(|e| ObjectError::Io(e.to_string()))?;
        if !endpoint.is_empty() {
            bucket = bucket.with_path_style();
        }
        Ok(Self {
            bucket,
            expires: u32::try_from(expires.as_secs()).unwrap_or(u32::MAX),
        })
    }
}

/// Where workspace snapshots live.
pub enum ObjectStore {
    Local(LocalObjects),
    S3(S3Objects),
}

impl ObjectStore {
    pub async fn presign_get(&self, key: &str) -> Result<String, ObjectError> {
        match self {
            ObjectStore::Local(l) => Ok(l.presign_get(key)),
            ObjectStore::S3(s) => s
                .bucket
                .presign_get(format!("/{key}"), s.expires, None)
                .await
                .map_err(|e| ObjectError::Io(e.to_string())),
        }
    }

    /// The upload URL, its content type signed in.
    pub async fn presign_put(&self, key: &str) -> Result<String, ObjectError> {
        match self {
            ObjectStore::Local(l) => Ok(l.presign_put(key)),
            ObjectStore::S3(s) => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static(CONTENT_TYPE),
                );
                s.bucket
                    .presign_put(format!("/{key}"), s.expires, Some(headers), None)
                    .await
                    .map_err(|e| ObjectError::Io(e.to_string()))
            }
        }
    }

    /// Whether the object was uploaded (a failed check counts as absent: the version is not advanced).
    pub async fn exists(&self, key: &str) -> bool {
        match self {
            ObjectStore::Local(l) => l.exists(key).await,
            ObjectStore::S3(s) => {
                matches!(s.bucket.head_object(format!("/{key}")).await, Ok((_, 200)))
            }
        }
    }

    /// The local store, whose objects the gateway serves itself.
    pub fn local(&self) -> Option<&LocalObjects> {
        match self {
            ObjectStore::Local(l) => Some(l),
            ObjectStore::S3(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LocalObjects {
        LocalObjects::new(
            std::env::temp_dir(),
            "http://gw:3002/".into(),
            b"secret",
            Duration::from_secs(60),
            1024,
        )
    }

    #[test]
    fn only_planned_keys_are_valid() {
        let org = uuid::Uuid::new_v4();
        let ws = uuid::Uuid::new_v4();
        assert!(valid_key(&format!("workspaces/{org}/{ws}/v12.tar.zst")));
        for bad in [
            format!("workspaces/{org}/{ws}/../x/v1.tar.zst"),
            format!("workspaces/{org}/{ws}/v.tar.zst"),
            format!("workspaces/{org}/../v1.tar.zst"),
            format!("/etc/{org}/{ws}/v1.tar.zst"),
            format!("workspaces/{org}/{ws}/v1.tar"),
            format!("workspaces/{org}/{ws}/v1x.tar.zst"),
        ] {
            assert!(!valid_key(&bad), "{bad}");
        }
    }

    #[test]
    fn presigned_urls_verify_only_as_signed() {
        let s = store();
        let key = format!(
            "workspaces/{}/{}/v1.tar.zst",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4()
        );
        let url = s.presign_put(&key);
        assert!(url.starts_with(&format!("http://gw:3002/workspace-objects/{key}?expires=")));
        let q = url.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut sig = String::new();
        for kv in q.split('&') {
            match kv.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => sig = v.to_string(),
                _ => {}
            }
        }
        assert_eq!(s.verify("PUT", &key, CONTENT_TYPE, expires, &sig), Ok(()));
        // Another method, content type, key, expiry or secret does not verify.
        assert_eq!(
            s.verify("GET", &key, "", expires, &sig),
            Err(ObjectError::BadSignature)
        );
        assert_eq!(
            s.verify("PUT", &key, "text/plain", expires, &sig),
            Err(ObjectError::BadSignature)
        );
        assert_eq!(
            s.verify("PUT", &key, CONTENT_TYPE, expires + 1, &sig),
            Err(ObjectError::BadSignature)
        );
        let other = LocalObjects::new(
            std::env::temp_dir(),
            "http://gw".into(),
            b"other",
            Duration::from_secs(60),
            1,
        );
        assert_eq!(
            other.verify("PUT", &key, CONTENT_TYPE, expires, &sig),
            Err(ObjectError::BadSignature)
        );
        // Past its expiry, a correctly signed URL is refused as expired.
        let past = chrono::Utc::now().timestamp() - 5;
        let old = s.signature("GET", &key, "", past);
        assert_eq!(
            s.verify("GET", &key, "", past, &old),
            Err(ObjectError::Expired)
        );
    }
}
