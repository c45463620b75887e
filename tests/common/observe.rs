//! Looking at a running Sluice from outside: its status endpoint, the process table, and
//! the bucket cursor it keeps beside a job's output.

/// `GET path` on 127.0.0.1:`port` (Sluice's status endpoint); the body, or `None` while
/// nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_owned())
}

/// Processes whose command line contains `needle` (the process table, as `ps` sees it).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        if cmdline.contains(needle) && !zombie {
            found.push(pid);
        }
    }
    found
}

/// Objects the bucket cursor under `lake` lists as done: the keys of its base
/// (`_sluice/bucket/cursor.json`) and of its log entries (`_sluice/bucket/cursor.d/`).
pub async fn done_objects(env: &super::Env, lake: &str) -> usize {
    use futures::TryStreamExt as _;
    use object_store::path::Path;
    use object_store::{ObjectStore as _, ObjectStoreExt as _};
    let store = super::s3(env);
    let listed: Vec<_> = store
        .list(Some(&Path::from(format!("{lake}/_sluice/bucket"))))
        .try_collect()
        .await
        .unwrap();
    let mut keys = std::collections::HashSet::new();
    for meta in listed {
        let name = meta.location.as_ref();
        if !(name.ends_with("/cursor.json") || name.contains("/cursor.d/")) {
            continue;
        }
        // Compaction may delete an entry between the listing and this read.
        let Ok(found) = store.get(&meta.location).await else {
            continue;
        };
        let body: serde_json::Value =
            serde_json::from_slice(&found.bytes().await.unwrap()).unwrap();
        keys.extend(body["done"].as_object().unwrap().keys().cloned());
    }
    keys.len()
}
