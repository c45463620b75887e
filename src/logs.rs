//! `sluice logs NAME [--follow]`: a job's function stderr lines from a server, one per
//! line as `TIME INSTANCE BATCH  LINE`, or with `--json` as the API's NDJSON lines.
//! `--follow` keeps printing new lines until interrupted (or the server stops).

use std::io::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, ClientError, exit_code_of};

pub async fn logs(
    name: String,
    follow: bool,
    limit: u32,
    server: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/jobs/{name}/logs?limit={limit}&follow={follow}");
    Ok(exit_code_of(print_logs(&path, follow, server, json).await))
}

async fn print_logs(
    path: &str,
    follow: bool,
    server: Option<String>,
    json: bool,
) -> Result<(), ClientError> {
    let client = Client::new(server)?;
    if !follow {
        let body = client.get(path).await?;
        for line in body["lines"].as_array().map_or(&[][..], Vec::as_slice) {
            print_line(line, json);
        }
        return Ok(());
    }
    let mut response = client.stream(path).await?;
    let mut pending = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(error) => {
                return Err(ClientError::Failed(format!(
                    "the server stopped sending lines: {}",
                    error.without_url()
                )));
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            if let Ok(value) = serde_json::from_slice::<Value>(&line) {
                print_line(&value, json);
            }
        }
        let _ = std::io::stdout().flush();
    }
}

fn print_line(line: &Value, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    let time = line["time_ms"]
        .as_u64()
        .map(|ms| {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_millis(time).to_string()
        })
        .unwrap_or_default();
    println!(
        "{time} {} {}  {}",
        line["instance"].as_str().unwrap_or("-"),
        line["batch"].as_str().unwrap_or("-"),
        line["line"].as_str().unwrap_or_default()
    );
}
