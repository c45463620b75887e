//! The platform's end of a zygote's control socket (protocol in `zygote.py`): requests go
//! out as single packets, with the instance's pipes attached as `SCM_RIGHTS`; a dedicated
//! thread reads replies and exit reports and hands them to the waiting tasks.
//!
//! Invariants: a forked instance's exit is reported exactly once, through the
//! [`ForkedLeader`] made from the fork reply (its watcher is registered before the reply
//! is handed over, so an exit reported right after cannot be missed); the zygote keeps an
//! ended instance as a zombie, so its pid and process group id stay reserved, until the
//! leader is dropped and asks for it to be reaped. When the zygote goes (end of file on
//! the socket), every pending request fails and every live instance is reported killed
//! by SIGKILL (they die with the zygote: `PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

/// Largest message the zygote sends (they are a few dozen bytes).
const MAX_MESSAGE: usize = 64 << 10;

/// A message from the zygote.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ZygoteMessage {
    Forked { id: u64, pid: i32 },
    ForkFailed { id: u64, error: String },
    Exited { exited: i32, status: i32 },
    Ready { ready: bool },
}

/// The platform's end of one zygote's control socket.
#[derive(Debug)]
pub(super) struct ControlChannel {
    socket: OwnedFd,
    state: Mutex<ChannelState>,
}

type ForkReply = Result<(Pid, watch::Receiver<Option<ExitStatus>>), String>;

#[derive(Debug, Default)]
struct ChannelState {
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<ForkReply>>,
    exits: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
    ready: Option<oneshot::Sender<()>>,
    closed: bool,
}

impl ControlChannel {
    /// Starts reading `socket` on a dedicated thread (its reads block). The receiver
    /// resolves when the zygote has imported its modules, and fails if it ends before.
    pub(super) fn start(socket: OwnedFd) -> io::Result<(Arc<Self>, oneshot::Receiver<()>)> {
        let (ready, ready_receiver) = oneshot::channel();
        let channel = Arc::new(ControlChannel {
            socket,
            state: Mutex::new(ChannelState {
                ready: Some(ready),
                ..ChannelState::default()
            }),
        });
        let reader = Arc::clone(&channel);
        std::thread::Builder::new()
            .name("sluice-zygote".into())
            .spawn(move || reader.read_until_closed())?;
        Ok((channel, ready_receiver))
    }

    fn state(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the zygote has gone (end of file on the socket).
    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Asks the zygote to fork an instance with `env`, wired to `fds` (stdin, stdout,
    /// stderr, go), and with `init` (the init program of its PID namespace) when it gets
    /// namespaces of its own, waiting at most `bound` for the reply. The fds are closed
    /// here once sent; the zygote holds its copies.
    pub(super) async fn fork(
        self: &Arc<Self>,
        env: &[(OsString, OsString)],
        fds: [OwnedFd; 4],
        init: Option<BorrowedFd<'_>>,
        bound: Duration,
    ) -> Result<ForkedLeader, String> {
        let (reply, reply_receiver) = oneshot::channel();
        let id = {
            let mut state = self.state();
            if state.closed {
                return Err("the preload process is not running".into());
            }
            state.next_id += 1;
            let id = state.next_id;
            state.pending.insert(id, reply);
            id
        };
        let env: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned().into(),
                )
            })
            .collect();
        let request = serde_json::json!({"op": "fork", "id": id, "env": env});
        let raw: Vec<RawFd> = fds
            .iter()
            .map(AsRawFd::as_raw_fd)
            .chain(init.as_ref().map(AsRawFd::as_raw_fd))
            .collect();
        if let Err(error) = self.send(&request, &raw) {
            self.state().pending.remove(&id);
            return Err(format!("cannot send the fork request: {error}"));
        }
        drop(fds);
        let reply = match tokio::time::timeout(bound, reply_receiver).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_closed)) => Err("the preload process exited while forking".into()),
            Err(_elapsed) => {
                self.state().pending.remove(&id);
                Err(format!("the preload process did not fork within {bound:?}"))
            }
        };
        let (pid, exit) = reply?;
        Ok(ForkedLeader {
            pid,
            exit,
            channel: Arc::clone(self),
        })
    }

    /// Sends one packet, never waiting: the zygote reads its socket all the time, so a
    /// full socket buffer means it is stuck.
    fn send(&self, message: &serde_json::Value, fds: &[RawFd]) -> io::Result<()> {
        let bytes = message.to_string();
        let iov = [IoSlice::new(bytes.as_bytes())];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Lets the zygote reap `pid` (now, or as soon as it ends). Best effort: when the
    /// zygote is gone, whoever adopted the process reaps it.
    fn release(&self, pid: Pid) {
        {
            let mut state = self.state();
            state.exits.remove(&pid.as_raw());
            if state.closed {
                return;
            }
        }
        let request = serde_json::json!({"op": "release", "pid": pid.as_raw()});
        if let Err(error) = self.send(&request, &[]) {
            tracing::debug!(pid = pid.as_raw(), %error, "cannot ask the preload process to reap an instance");
        }
    }

    /// The reader thread: blocking reads until end of file.
    fn read_until_closed(self: Arc<Self>) {
        let mut buffer = vec![0_u8; MAX_MESSAGE];
        loop {
            match recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(0) => break,
                Ok(length) => self.dispatch(&buffer[..length]),
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::warn!(%errno, "cannot read from the preload process; treating it as gone");
                    break;
                }
            }
        }
        let mut state = self.state();
        state.closed = true;
        state.ready = None;
        for (_, reply) in state.pending.drain() {
            let _ = reply.send(Err("the preload process exited while forking".into()));
        }
        for (_, exit) in state.exits.drain() {
            exit.send_replace(Some(ExitStatus::from_raw(nix::libc::SIGKILL)));
        }
    }

    fn dispatch(&self, packet: &[u8]) {
        let message: ZygoteMessage = match serde_json::from_slice(packet) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed message from the preload process");
                return;
            }
        };
        let mut state = self.state();
        match message {
            ZygoteMessage::Forked { id, pid } => {
                let (exit, exit_receiver) = watch::channel(None);
                state.exits.insert(pid, exit);
                match state.pending.remove(&id) {
                    Some(reply) => {
                        let _ = reply.send(Ok((Pid::from_raw(pid), exit_receiver)));
                    }
                    None => {
                        // The requester gave up (timeout): the child waits for a `go`
                        // byte that never comes and exits when its pipe closes.
                        state.exits.remove(&pid);
                        drop(state);
                        self.release(Pid::from_raw(pid));
                    }
                }
            }
            ZygoteMessage::ForkFailed { id, error } => {
                if let Some(reply) = state.pending.remove(&id) {
                    let _ = reply.send(Err(format!("the preload process could not fork: {error}")));
                }
            }
            ZygoteMessage::Exited { exited, status } => {
                if let Some(exit) = state.exits.get(&exited) {
                    exit.send_replace(Some(ExitStatus::from_raw(status)));
                }
            }
            ZygoteMessage::Ready { ready: true } => {
                if let Some(ready) = state.ready.take() {
                    let _ = ready.send(());
                }
            }
            ZygoteMessage::Ready { ready: false } => {}
        }
    }
}

/// The leader of a forked instance: a child of the zygote, not of the platform. Its exit
/// is learnt from the zygote; dropping the value lets the zygote reap it.
#[derive(Debug)]
pub(crate) struct ForkedLeader {
    pid: Pid,
    exit: watch::Receiver<Option<ExitStatus>>,
    channel: Arc<ControlChannel>,
}

impl ForkedLeader {
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the leader to end. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self
            .exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| io::Error::other("lost track of a forked function instance"))?;
        (*status).ok_or_else(|| io::Error::other("lost track of a forked function instance"))
    }

    /// The leader's exit status, if it has ended. Does not wait.
    pub(crate) fn try_wait(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }
}

impl Drop for ForkedLeader {
    fn drop(&mut self) {
        self.channel.release(self.pid);
    }
}
