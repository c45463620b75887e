//! The pool over real function processes (`sh` stream instances).

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::function::encode_batch;
use crate::spec::{Ordering, parse_job};
use sluice_connectors::{Event, Origin};

/// A stream function that answers every batch with no rows.
const SILENT_STREAM: &str = r#"while read -r line; do if [ -z "$line" ]; then echo; fi; done"#;

fn job(dir: &Path, min: u32, max: u32, idle_timeout: &str) -> crate::spec::JobSpec {
    std::fs::write(dir.join("fn.sh"), SILENT_STREAM).unwrap();
    let text = format!(
        r#"name = "pool-test"
[trigger.kafka]
brokers = "127.0.0.1:1"
topic = "t"
[function]
command = ["sh", "fn.sh"]
mode = "stream"
[scaling]
min_instances = {min}
max_instances = {max}
idle_timeout = "{idle_timeout}"
[output]
url = "out"
schema = {{ id = "int64" }}
"#
    );
    parse_job(&text, &dir.join("job.toml"), dir, &|_| None).unwrap()
}

fn pool(spec: &crate::spec::JobSpec, node: Arc<NodeCapacity>) -> InstancePool {
    let template = FunctionRunner::new(&spec.name, &spec.dir, &spec.function);
    InstancePool::new(&spec.name, template, spec.function.mode, spec.scaling, node)
}

async fn run_one(runner: &mut FunctionRunner) {
    let event = Event::from_payload("{}", Origin::Sample { line: 1 });
    let batch = encode_batch(&[event], crate::spec::InputMode::Value);
    runner.invoke(&batch).await.unwrap();
}

#[tokio::test]
async fn leases_up_to_desired_and_reuses_warm_instances() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), 0, 3, "30s");
    assert_eq!(spec.scaling.ordering, Ordering::Partition);
    let node = NodeCapacity::new(8);
    let mut pool = pool(&spec, node.clone());
    // With nothing measured and work waiting, one instance may start before any tick.
    let mut first = pool.lease().unwrap();
    assert!(
        pool.lease().is_none(),
        "desired is still 0: one instance for waiting work"
    );
    pool.rescale(
        Instant::now(),
        Load {
            work_records: 100,
            lanes: 5,
        },
    );
    assert_eq!(pool.desired(), 3);
    let mut second = pool.lease().unwrap();
    let third = pool.lease().unwrap();
    assert!(pool.lease().is_none(), "max_instances");
    assert_eq!((pool.busy(), node.held("pool-test")), (3, 3));
    run_one(&mut first).await;
    run_one(&mut second).await;
    let warm_pid = second.warm_pid().unwrap();
    pool.release(first, 1, Duration::from_millis(5));
    pool.release(second, 1, Duration::from_millis(5));
    // `third` never ran: no warm instance, so its slot goes back to the node.
    pool.release(third, 0, Duration::ZERO);
    assert_eq!(
        (pool.busy(), pool.idle(), node.held("pool-test")),
        (0, 2, 2)
    );
    // The warmest (most recently released) idle instance is leased first.
    let again = pool.lease().unwrap();
    assert_eq!(again.warm_pid(), Some(warm_pid));
    pool.release(again, 1, Duration::from_millis(5));
    assert_eq!((pool.busy(), pool.busy_peak()), (0, 3), "the peak stays");
    pool.shutdown().await;
    assert_eq!((pool.instances(), node.held("pool-test")), (0, 0));
}

#[tokio::test]
async fn idle_instances_stop_after_idle_timeout_down_to_min_instances() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), 1, 3, "1s");
    let node = NodeCapacity::new(8);
    let mut pool = pool(&spec, node.clone());
    // min_instances: one instance is started and kept warm without any batch.
    pool.maintain(Instant::now()).await;
    assert_eq!(pool.idle(), 1);
    let pid = pool.idle_pids()[0];
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    pool.rescale(
        Instant::now(),
        Load {
            work_records: 100,
            lanes: 3,
        },
    );
    let mut leased: Vec<FunctionRunner> = (0..3).map(|_| pool.lease().unwrap()).collect();
    for runner in &mut leased {
        run_one(runner).await;
    }
    for runner in leased {
        pool.release(runner, 1, Duration::from_millis(1));
    }
    assert_eq!(pool.idle(), 3);
    let pids = pool.idle_pids();
    // Not yet timed out.
    pool.maintain(Instant::now()).await;
    assert_eq!(pool.idle(), 3);
    // Past idle_timeout: down to min_instances, the process of each stopped one gone.
    pool.maintain(Instant::now() + Duration::from_secs(2)).await;
    assert_eq!(pool.idle(), 1);
    assert_eq!(node.held("pool-test"), 1);
    pool.shutdown().await;
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "instance {pid} stopped"
        );
    }
}

#[tokio::test]
async fn a_full_node_limits_new_instances() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), 0, 4, "30s");
    let node = NodeCapacity::new(2);
    let mut pool = pool(&spec, node.clone());
    pool.rescale(
        Instant::now(),
        Load {
            work_records: 100,
            lanes: 4,
        },
    );
    let a = pool.lease().unwrap();
    let b = pool.lease().unwrap();
    assert!(pool.lease().is_none(), "the node has two slots");
    pool.release(a, 0, Duration::ZERO);
    pool.release(b, 0, Duration::ZERO);
    pool.shutdown().await;
}
