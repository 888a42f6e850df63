//! The workspace cycle end to end through `execute`: real host-backend tasks, a real cache on disk,
//! and a small S3 stand-in on a local port (GET serves stored objects and counts itself; PUT insists
//! on the signed content type and stores the body, so a later call can download what an earlier one
//! uploaded).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use super::*;
use crate::domain::agents::identity::ToolKind;
use crate::domain::gateway::protocol::{
    InvokeToolV2, ResultStatus, ToolPolicy, ToolResultV2, WorkspaceAccess, WorkspaceRef,
};
use crate::node_agent::runtime::execute;
use crate::node_agent::sandbox::BackendKind;

const ORG: &str = "0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99";

#[derive(Default)]
struct Store {
    objects: HashMap<String, Vec<u8>>,
    gets: usize,
    puts: Vec<Put>,
    refuse_puts: bool,
}

struct Put {
    path: String,
    content_length: Option<String>,
    chunked: bool,
    body: Vec<u8>,
}

struct S3 {
    base: String,
    store: Arc<Mutex<Store>>,
}

impl S3 {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let store = Arc::new(Mutex::new(Store::default()));
        let served = Arc::clone(&store);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, Arc::clone(&served)));
            }
        });
        Self { base, store }
    }

    /// A presigned-looking URL for `key`: the query must not matter to the store.
    fn url(&self, key: &str) -> String {
        format!("{}/{key}?X-Amz-Signature=abc123", self.base)
    }

    fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .lock()
            .unwrap()
            .objects
            .insert(format!("/{key}"), bytes);
    }

    fn gets(&self) -> usize {
        self.store.lock().unwrap().gets
    }

    fn puts(&self) -> usize {
        self.store.lock().unwrap().puts.len()
    }

    fn uploaded(&self, key: &str) -> Vec<u8> {
        let store = self.store.lock().unwrap();
        let put = store
            .puts
            .iter()
            .rev()
            .find(|p| p.path == format!("/{key}"))
            .expect("an upload");
        assert_eq!(
            put.content_length.as_deref(),
            Some(put.body.len().to_string().as_str())
        );
        assert!(!put.chunked);
        put.body.clone()
    }
}

async fn answer(mut socket: TcpStream, store: Arc<Mutex<Store>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap().split(' ');
    let method = request.next().unwrap().to_string();
    let path = request
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    let (status, extra, payload) = {
        let mut store = store.lock().unwrap();
        match method.as_str() {
            "GET" => {
                store.gets += 1;
                match store.objects.get(&path) {
                    Some(bytes) => ("200 OK", String::new(), bytes.clone()),
                    None => ("404 Not Found", String::new(), Vec::new()),
                }
            }
            "PUT" => {
                let chunked = headers.contains_key("transfer-encoding");
                let signed_type =
                    headers.get("content-type").map(String::as_str) == Some("application/zstd");
                if chunked {
                    ("411 Length Required", String::new(), Vec::new())
                } else if !signed_type || store.refuse_puts {
                    ("403 Forbidden", String::new(), Vec::new())
                } else {
                    store.puts.push(Put {
                        path: path.clone(),
                        content_length: headers.get("content-length").cloned(),
                        chunked,
                        body: body.clone(),
                    });
                    store.objects.insert(path, body);
                    let etag = format!("ETag: \"etag-{}\"\r\n", store.puts.len());
                    ("200 OK", etag, Vec::new())
                }
            }
            _ => ("405 Method Not Allowed", String::new(), Vec::new()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        payload.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(&payload).await;
    let _ = socket.shutdown().await;
}

/// One agent: its workdir root and cache under a fresh temporary directory.
struct Agent {
    base: PathBuf,
    ctx: RuntimeContext,
}

impl Agent {
    fn new() -> Self {
        Self::with_limits(64 << 20, 10_000)
    }

    fn with_limits(max_bytes: u64, max_entries: u64) -> Self {
        let base = std::env::temp_dir().join(format!("vespid-ws-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&base).unwrap();
        let base = base.canonicalize().unwrap();
        let mut ctx = RuntimeContext::new(BackendKind::Host, base.join("workdir")).unwrap();
        ctx.workspaces = Workspaces::new(WorkspaceConfig {
            cache_root: base.join("cache"),
            max_bytes,
            max_entries,
        });
        Self { base, ctx }
    }

    fn cached(&self, ws: Uuid, version: i64) -> PathBuf {
        self.base
            .join("cache")
            .join(ws.to_string())
            .join(version.to_string())
            .join("extracted")
    }

    /// The per-run workdir of the node `build`, first attempt, no run id.
    fn workdir(&self) -> PathBuf {
        self.base.join(format!("workdir/{ORG}/run/build/1"))
    }

    async fn run(&self, invoke: InvokeToolV2) -> ToolResultV2 {
        execute(invoke, &self.ctx).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn shell(script: &str) -> Value {
    json!({"nodeId": "build", "node": {"id": "build", "type": "agent.execute", "config": {
        "task": {"type": "shell", "script": script}}}})
}

/// A call on version `version` of `ws`, downloading from `download` and uploading to `upload_key`.
fn call(
    kind: ToolKind,
    payload: Value,
    ws: Uuid,
    version: i64,
    download: Option<String>,
    s3: &S3,
    upload_key: &str,
) -> InvokeToolV2 {
    InvokeToolV2 {
        request_id: "run-1:0123456789abcdef".into(),
        organization_id: Uuid::parse_str(ORG).unwrap(),
        user_id: Uuid::new_v4(),
        kind,
        payload,
        secret: None,
        tool_policy: ToolPolicy::default_deny(10_000, 65_536),
        workspace: Some(WorkspaceRef {
            workspace_id: ws,
            version,
            object_key: if version == 0 {
                String::new()
            } else {
                format!("v{version}")
            },
            etag: None,
        }),
        workspace_access: Some(WorkspaceAccess {
            download_url: download,
            upload: WorkspaceUpload {
                url: s3.url(upload_key),
                object_key: format!("workspaces/{ORG}/{ws}/{upload_key}"),
                version: version + 1,
            },
        }),
        idempotency_key: None,
    }
}

fn task_call(
    script: &str,
    ws: Uuid,
    version: i64,
    s3: &S3,
    download: Option<&str>,
) -> InvokeToolV2 {
    let upload = format!("{ws}/v{}.tar.zst", version + 1);
    call(
        ToolKind::AgentExecute,
        shell(script),
        ws,
        version,
        download.map(|k| s3.url(k)),
        s3,
        &upload,
    )
}

fn tar_zst(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder);
    let tar = builder.into_inner().unwrap();
    zstd::encode_all(&tar[..], 3).unwrap()
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

/// An entry written byte for byte, past the checks `tar::Builder` makes on names.
fn add_raw(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// An archive as `path -> content`, `path -> "dir"` or `path -> "-> target"`.
fn listing(archive: &[u8]) -> BTreeMap<String, String> {
    let tar = zstd::decode_all(archive).unwrap();
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let what = match entry.header().entry_type() {
            tar::EntryType::Directory => "dir".to_string(),
            tar::EntryType::Symlink => format!(
                "-> {}",
                entry.link_name().unwrap().unwrap().to_string_lossy()
            ),
            _ => {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                text
            }
        };
        entries.insert(path.trim_end_matches('/').to_string(), what);
    }
    entries
}

fn stdout(result: &ToolResultV2) -> String {
    result.output.as_ref().unwrap()["stdout"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn round_trip_from_an_empty_workspace_to_another_agent() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    let first = Agent::new();
    let result = first
        .run(task_call(
            "mkdir -p out && printf hello > out/greeting.txt && ln -s out/greeting.txt latest && pwd",
            ws,
            0,
            &s3,
            None,
        ))
        .await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(
        result.workspace,
        Some(json!({"workspaceId": ws, "version": 1,
            "objectKey": format!("workspaces/{ORG}/{ws}/{ws}/v1.tar.zst"), "etag": "etag-1"}))
    );
    // The task ran in its per-run workdir, which is scratch once uploaded.
    let workdir = first.workdir();
    assert_eq!(stdout(&result).trim(), workdir.to_str().unwrap());
    assert!(!workdir.exists());
    assert_eq!(s3.gets(), 0, "version 0 has nothing to download");
    let uploaded = listing(&s3.uploaded(&format!("{ws}/v1.tar.zst")));
    assert_eq!(
        uploaded,
        BTreeMap::from([
            ("latest".to_string(), "-> out/greeting.txt".to_string()),
            ("out".to_string(), "dir".to_string()),
            ("out/greeting.txt".to_string(), "hello".to_string()),
        ])
    );
    // The uploaded version is this agent's cache now.
    assert_eq!(
        std::fs::read_to_string(first.cached(ws, 1).join("out/greeting.txt")).unwrap(),
        "hello"
    );

    let second = Agent::new();
    let result = second
        .run(task_call(
            "cat out/greeting.txt; echo; readlink latest",
            ws,
            1,
            &s3,
            Some(&format!("{ws}/v1.tar.zst")),
        ))
        .await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(stdout(&result), "hello\nout/greeting.txt\n");
    assert_eq!(s3.gets(), 1);
    assert_eq!(result.workspace.unwrap()["version"], 2);
}

#[tokio::test]
async fn a_cached_version_skips_the_download() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    s3.put_object(
        "v3",
        tar_zst(|b| add_file(b, "note.txt", b"from the store")),
    );
    let agent = Agent::new();
    for _ in 0..2 {
        let result = agent
            .run(task_call("cat note.txt", ws, 3, &s3, Some("v3")))
            .await;
        assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
        assert_eq!(stdout(&result), "from the store");
    }
    assert_eq!(s3.gets(), 1, "the second call used the cache");
    // The version this agent uploaded is cached too: its URL is never fetched.
    let result = agent
        .run(task_call("cat note.txt", ws, 4, &s3, Some("missing")))
        .await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(stdout(&result), "from the store");
    assert_eq!(s3.gets(), 1);
}

#[tokio::test]
async fn a_failed_download_leaves_no_cache_entry() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    let agent = Agent::new();
    let result = agent
        .run(task_call("touch ran", ws, 5, &s3, Some("v5")))
        .await;
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_DOWNLOAD_FAILED:404")
    );
    assert_eq!(result.workspace, None);
    assert!(!agent.cached(ws, 5).exists());
    assert!(!agent.cached(ws, 5).parent().unwrap().exists());
    assert!(!agent.workdir().exists(), "the task never ran");
    assert_eq!(s3.puts(), 0);
    // Once the object is there, the same call works: the failure was not cached.
    s3.put_object("v5", tar_zst(|b| add_file(b, "a", b"1")));
    let result = agent.run(task_call("cat a", ws, 5, &s3, Some("v5"))).await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(s3.gets(), 2);
}

#[tokio::test]
async fn a_later_version_without_a_url_is_refused() {
    let s3 = S3::start().await;
    let agent = Agent::new();
    let result = agent
        .run(task_call("touch ran", Uuid::new_v4(), 2, &s3, None))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_DOWNLOAD_URL_REQUIRED")
    );
    assert_eq!(s3.puts(), 0);
}

#[tokio::test]
async fn malicious_archives_are_refused_and_write_nothing_outside() {
    use tar::EntryType::{Block, Char, Link, Symlink};
    let s3 = S3::start().await;
    let agent = Agent::new();
    let outside = agent.base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = outside.to_str().unwrap().to_string();
    let marker = format!("vespid-pwned-{}", Uuid::new_v4().simple());
    type Build = Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>;
    let (m1, m2, o1, o2) = (marker.clone(), marker.clone(), out.clone(), out.clone());
    let cases: Vec<(&str, Build)> = vec![
        (
            "path_escape",
            Box::new(|b| add_raw(b, tar::EntryType::Regular, "../escape", "", b"x")),
        ),
        (
            "path_escape",
            Box::new(move |b| add_raw(b, tar::EntryType::Regular, &format!("{o1}/abs"), "", b"x")),
        ),
        (
            "symlink_escape",
            Box::new(move |b| {
                add_raw(b, Symlink, "etc", "/etc", b"");
                add_raw(b, tar::EntryType::Regular, &format!("etc/{m1}"), "", b"x");
            }),
        ),
        (
            "symlink_escape",
            Box::new(move |b| {
                add_raw(b, Symlink, "out", &o2, b"");
                add_raw(b, tar::EntryType::Regular, &format!("out/{m2}"), "", b"x");
            }),
        ),
        (
            "symlink_escape",
            Box::new(|b| add_raw(b, Symlink, "sub/up", "../../outside", b"")),
        ),
        (
            "link_in_path",
            Box::new(|b| {
                add_raw(b, Symlink, "inside", "sub", b"");
                add_raw(b, tar::EntryType::Regular, "inside/f", "", b"x");
            }),
        ),
        (
            "hardlink_escape",
            Box::new(|b| add_raw(b, Link, "passwd", "/etc/passwd", b"")),
        ),
        (
            "hardlink_escape",
            Box::new(|b| add_raw(b, Link, "x", "../outside/keep", b"")),
        ),
        (
            "special_file",
            Box::new(|b| add_raw(b, Char, "null", "", b"")),
        ),
        (
            "special_file",
            Box::new(|b| add_raw(b, Block, "disk", "", b"")),
        ),
    ];
    let ws = Uuid::new_v4();
    for (version, (reason, build)) in (1..).zip(cases) {
        let key = format!("bad-{version}");
        s3.put_object(&key, tar_zst(build));
        let result = agent
            .run(task_call("touch ran", ws, version, &s3, Some(&key)))
            .await;
        assert_eq!(
            result.error.as_deref(),
            Some(format!("WORKSPACE_EXTRACT_FAILED:{reason}").as_str()),
            "case {version}"
        );
        assert!(!agent.cached(ws, version).exists(), "case {version}");
    }
    s3.put_object("garbage", b"not zstd at all".to_vec());
    let result = agent
        .run(task_call("touch ran", ws, 99, &s3, Some("garbage")))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_EXTRACT_FAILED:corrupt")
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/etc").join(&marker).exists());
    assert!(!agent.base.join("escape").exists());
    assert!(!agent.workdir().exists(), "no task ran");
    assert_eq!(s3.puts(), 0);
}

#[tokio::test]
async fn oversize_archives_are_refused() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    // A megabyte of zeros is a few hundred bytes of zstd: only the unpacked size shows it.
    let agent = Agent::with_limits(64 << 10, 100);
    s3.put_object(
        "bomb",
        tar_zst(|b| add_file(b, "zeros", &vec![0u8; 1 << 20])),
    );
    let result = agent
        .run(task_call("touch ran", ws, 1, &s3, Some("bomb")))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_EXTRACT_FAILED:too_large")
    );
    assert!(!agent.cached(ws, 1).exists());

    s3.put_object(
        "many",
        tar_zst(|b| {
            for i in 0..101 {
                add_file(b, &format!("f{i}"), b"");
            }
        }),
    );
    let result = agent
        .run(task_call("touch ran", ws, 2, &s3, Some("many")))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_EXTRACT_FAILED:too_many_entries")
    );

    // A long-name record is read into memory whole, so the decompressed stream itself is capped.
    s3.put_object(
        "longname",
        tar_zst(|b| {
            add_raw(
                b,
                tar::EntryType::GNULongName,
                "././@LongLink",
                "",
                &vec![b'a'; 4 << 20],
            );
            add_file(b, "x", b"");
        }),
    );
    let result = agent
        .run(task_call("touch ran", ws, 4, &s3, Some("longname")))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_EXTRACT_FAILED:too_large")
    );

    // More bytes on the wire than a whole version may hold: not even downloaded to the end.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    s3.put_object("huge", noise);
    let result = agent
        .run(task_call("touch ran", ws, 3, &s3, Some("huge")))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_DOWNLOAD_FAILED:too_large")
    );
    assert!(!agent.cached(ws, 3).exists());

    // A task that writes past the cap fails its snapshot instead of uploading what no agent would
    // unpack.
    let result = agent
        .run(task_call(
            "head -c 100000 /dev/zero > big",
            ws,
            0,
            &s3,
            None,
        ))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_SNAPSHOT_FAILED:too_large")
    );
    assert_eq!(s3.puts(), 0);
}

#[tokio::test]
async fn an_upload_refusal_fails_the_call_and_drops_its_output() {
    let s3 = S3::start().await;
    s3.store.lock().unwrap().refuse_puts = true;
    let ws = Uuid::new_v4();
    let agent = Agent::new();
    let result = agent
        .run(task_call(
            "echo did work > f; echo printed",
            ws,
            0,
            &s3,
            None,
        ))
        .await;
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.error.as_deref(), Some("WORKSPACE_UPLOAD_FAILED:403"));
    assert_eq!(result.output, None);
    assert_eq!(result.workspace, None);
    assert!(!agent.cached(ws, 1).exists());
    // No archive or half-built tree is left behind in the cache.
    let version_dir = agent.cached(ws, 1).parent().unwrap().to_path_buf();
    assert_eq!(std::fs::read_dir(version_dir).unwrap().count(), 0);
    assert!(!agent.workdir().exists());
}

#[tokio::test]
async fn concurrent_calls_on_one_version_work_in_separate_copies() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    s3.put_object("v1", tar_zst(|b| add_file(b, "base.txt", b"shared")));
    let agent = Agent::new();
    let script = "echo $ME > mine.txt; sleep 1; cat mine.txt; ls | tr '\\n' ' '; echo; pwd";
    let mut calls = Vec::new();
    for me in ["a", "b"] {
        let mut payload = shell(script);
        payload["node"]["config"]["task"]["env"] = json!({"ME": me});
        let upload = format!("{ws}/v2-{me}.tar.zst");
        // Same run, node and attempt: both name the same per-run workdir.
        calls.push(call(
            ToolKind::AgentExecute,
            payload,
            ws,
            1,
            Some(s3.url("v1")),
            &s3,
            &upload,
        ));
    }
    let (b, a) = (calls.pop().unwrap(), calls.pop().unwrap());
    let (ra, rb) = tokio::join!(agent.run(a), agent.run(b));
    let (oa, ob) = (stdout(&ra), stdout(&rb));
    let (la, lb): (Vec<&str>, Vec<&str>) = (oa.lines().collect(), ob.lines().collect());
    assert_eq!(&la[..2], ["a", "base.txt mine.txt "], "{ra:?}");
    assert_eq!(&lb[..2], ["b", "base.txt mine.txt "], "{rb:?}");
    assert_ne!(la[2], lb[2], "each call had its own directory");
    for me in ["a", "b"] {
        let files = listing(&s3.uploaded(&format!("{ws}/v2-{me}.tar.zst")));
        assert_eq!(files["mine.txt"], format!("{me}\n"));
        assert_eq!(files["base.txt"], "shared");
    }
    // The cached version itself was never written to.
    let cached = agent.cached(ws, 1);
    assert!(!cached.join("mine.txt").exists());
    assert_eq!(
        std::fs::read_to_string(cached.join("base.txt")).unwrap(),
        "shared"
    );
}

#[tokio::test]
async fn a_failed_task_is_still_snapshotted() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    let agent = Agent::new();
    let result = agent
        .run(task_call(
            "echo partial > f; echo out; exit 3",
            ws,
            0,
            &s3,
            None,
        ))
        .await;
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.error.as_deref(), Some("HOST_EXIT_CODE:3"));
    assert_eq!(stdout(&result), "out\n");
    assert_eq!(result.workspace.unwrap()["version"], 1);
    let files = listing(&s3.uploaded(&format!("{ws}/v1.tar.zst")));
    assert_eq!(files["f"], "partial\n");
}

#[tokio::test]
async fn calls_that_run_no_task_upload_the_tree_unchanged() {
    let s3 = S3::start().await;
    let ws = Uuid::new_v4();
    let archive = tar_zst(|b| add_file(b, "kept.txt", b"as it was"));
    s3.put_object("v3", archive.clone());
    let agent = Agent::new();
    let action = call(
        ToolKind::ConnectorAction,
        json!({"connectorId": "slack", "actionId": "message.post"}),
        ws,
        3,
        Some(s3.url("v3")),
        &s3,
        "v4",
    );
    let result = agent.run(action).await;
    assert_eq!(
        result.error.as_deref(),
        Some("ACTION_NOT_SUPPORTED:slack:message.post")
    );
    assert_eq!(result.workspace.unwrap()["version"], 4);
    assert_eq!(listing(&s3.uploaded("v4")), listing(&archive));

    let accept = call(
        ToolKind::AgentExecute,
        json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute"}}),
        ws,
        4,
        None,
        &s3,
        "v5",
    );
    let result = agent.run(accept).await;
    assert_eq!(result.output, Some(json!({"accepted": true})));
    assert_eq!(result.workspace.unwrap()["version"], 5);
    assert_eq!(listing(&s3.uploaded("v5")), listing(&archive));
    assert_eq!(s3.gets(), 1);
}

#[tokio::test]
async fn a_symlink_out_of_the_workspace_fails_the_snapshot() {
    let s3 = S3::start().await;
    let agent = Agent::new();
    let result = agent
        .run(task_call(
            "ln -s /etc/passwd pw; echo linked",
            Uuid::new_v4(),
            0,
            &s3,
            None,
        ))
        .await;
    assert_eq!(
        result.error.as_deref(),
        Some("WORKSPACE_SNAPSHOT_FAILED:symlink_escape")
    );
    assert_eq!(result.output, None);
    assert_eq!(s3.puts(), 0);
}

#[tokio::test]
async fn calls_without_a_workspace_behave_as_before() {
    let agent = Agent::new();
    let mut invoke = task_call("touch left", Uuid::new_v4(), 0, &S3::start().await, None);
    invoke.workspace = None;
    invoke.workspace_access = None;
    let result = agent.run(invoke).await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(result.workspace, None);
    assert!(agent.workdir().join("left").exists(), "the workdir stays");
    assert!(!agent.base.join("cache").exists());
}

#[tokio::test]
async fn a_task_that_cannot_run_here_fetches_and_uploads_nothing() {
    let s3 = S3::start().await;
    s3.put_object("v1", tar_zst(|b| add_file(b, "a", b"1")));
    let agent = Agent::new();
    let mut invoke = task_call("touch ran", Uuid::new_v4(), 1, &s3, Some("v1"));
    invoke.payload["node"]["config"]["sandbox"] = json!({"backend": "provider"});
    let result = agent.run(invoke).await;
    assert_eq!(
        result.error.as_deref(),
        Some("SANDBOX_PROVIDER_NOT_CONFIGURED")
    );
    assert_eq!(result.workspace, None);
    assert_eq!((s3.gets(), s3.puts()), (0, 0));
}
