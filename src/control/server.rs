//! The control socket: its file, and one thread serving every connection with `poll`.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::{handlers, State, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_BYTES, POLL_INTERVAL};

/// Responses waiting to be written beyond this stop the reading of more requests from that
/// connection (a client that sends but never reads).
const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// How often per-worker rates are sampled.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// The socket file this server created, removed when the server stops (only if it is still
/// the same file).
pub(crate) struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn remove(&self) {
        let same = std::fs::symlink_metadata(&self.path)
            .ok()
            .is_some_and(|m| Some((m.dev(), m.ino())) == self.id);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates the socket at `path` with mode 0600: the directory (0755) if missing, a stale socket
/// file replaced, refused if a server answers on it. Nobody can connect before the mode is set:
/// the socket listens only after the `chmod`.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("control socket: cannot create {}: {e}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {shown}: another server is listening on it (stop it, or set \
                     [control] socket to another path)"
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                format!("control socket {shown}: cannot remove the stale file: {e}")
            })?;
        }
        Ok(_) => {
            return Err(format!(
                "control socket {shown}: the path exists and is not a socket; remove it or set \
                 [control] socket to another path"
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("control socket {shown}: {e}")),
    }
    let address = SockAddr::unix(path).map_err(|e| format!("control socket {shown}: {e}"))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| format!("control socket: cannot create a Unix socket: {e}"))?;
    socket
        .bind(&address)
        .map_err(|e| format!("control socket {shown}: cannot bind: {e}"))?;
    let meta = std::fs::symlink_metadata(path);
    let file = SocketFile {
        path: path.to_path_buf(),
        id: meta.as_ref().ok().map(|m| (m.dev(), m.ino())),
    };
    let setup = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {shown}: cannot set mode 0600: {e}"))
        .and_then(|()| {
            socket
                .listen(MAX_CONNECTIONS as i32)
                .map_err(|e| format!("control socket {shown}: cannot listen: {e}"))
        })
        .and_then(|()| {
            socket
                .set_nonblocking(true)
                .map_err(|e| format!("control socket {shown}: {e}"))
        });
    if let Err(e) = setup {
        file.remove();
        return Err(e);
    }
    Ok((UnixListener::from(socket), file))
}

/// Per-worker packet rates over the last [`RATE_INTERVAL`], sampled by the control thread.
pub(crate) struct Rates {
    at: Option<Instant>,
    /// Per worker: received, sent, dropped at the last sample.
    last: Vec<[u64; 3]>,
    /// Per worker: received, sent, dropped per second.
    pub(crate) per_s: Vec<[f64; 3]>,
}

impl Rates {
    pub(crate) fn new(workers: usize) -> Rates {
        Rates {
            at: None,
            last: vec![[0; 3]; workers],
            per_s: vec![[0.0; 3]; workers],
        }
    }

    fn due(&self) -> bool {
        self.at.is_none_or(|at| at.elapsed() >= RATE_INTERVAL)
    }

    fn sample(&mut self, state: &State) {
        let now = Instant::now();
        let elapsed = self.at.map(|at| now.duration_since(at).as_secs_f64());
        for i in 0..self.last.len() {
            let Some(m) = state.metrics.worker(i) else {
                continue;
            };
            let current = [
                m.received,
                m.sent_by_type.iter().sum(),
                m.drops.iter().sum(),
            ];
            if let Some(secs) = elapsed.filter(|&s| s > 0.0) {
                for ((rate, now), before) in self.per_s[i].iter_mut().zip(current).zip(self.last[i])
                {
                    *rate = now.saturating_sub(before) as f64 / secs;
                }
            }
            self.last[i] = current;
        }
        self.at = Some(now);
    }
}

struct Connection {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once the output is written.
    closing: bool,
    last_active: Instant,
}

impl Connection {
    fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
            last_active: Instant::now(),
        }
    }

    fn reading(&self) -> bool {
        !self.closing && self.output.len() < MAX_PENDING_OUTPUT
    }

    /// Reads what is there and answers every complete line. false: close it now.
    fn on_readable(&mut self, state: &State) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    // The client is done sending: answer what it sent, then close.
                    self.closing = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.answer_lines(state);
                    if self.closing || self.output.len() >= MAX_PENDING_OUTPUT {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn answer_lines(&mut self, state: &State) {
        while let Some(end) = self.input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.len() > MAX_REQUEST_BYTES {
                self.refuse_long_line();
                return;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let response = handlers::handle_line(state, line);
            self.output.extend_from_slice(response.as_bytes());
            self.output.push(b'\n');
        }
        if self.input.len() > MAX_REQUEST_BYTES {
            self.refuse_long_line();
        }
    }

    fn refuse_long_line(&mut self) {
        self.input.clear();
        self.output.extend_from_slice(
            handlers::error_response(&format!(
                "request line longer than {MAX_REQUEST_BYTES} bytes; closing the connection"
            ))
            .as_bytes(),
        );
        self.output.push(b'\n');
        self.closing = true;
    }

    /// Writes what it can. false: close it now.
    fn on_writable(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        !self.closing
    }
}

/// Serves the control socket until either stop flag is set.
pub(crate) fn run(
    listener: UnixListener,
    state: &State,
    stop: &AtomicBool,
    server_stop: &AtomicBool,
) {
    let mut connections: Vec<Connection> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
    while !stop.load(Ordering::Relaxed) && !server_stop.load(Ordering::Relaxed) {
        {
            let mut rates = state.rates.lock();
            if rates.due() {
                rates.sample(state);
            }
        }
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &connections {
            let mut events = 0;
            if c.reading() {
                events |= libc::POLLIN;
            }
            if !c.output.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        let timeout_ms = POLL_INTERVAL.as_millis() as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs that lives
        // across the call; poll only writes their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!("control socket: poll failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
            continue;
        }
        // Connections first (their indexes match `fds[1..]`), then new ones.
        let mut keep = Vec::with_capacity(connections.len());
        for (mut c, fd) in connections.drain(..).zip(&fds[1..]) {
            let mut alive = true;
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && c.reading() {
                c.last_active = Instant::now();
                alive = c.on_readable(state);
            } else if fd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                alive = false;
            }
            if alive && !c.output.is_empty() {
                alive = c.on_writable();
            } else if alive && c.closing {
                alive = false;
            }
            if alive && c.last_active.elapsed() > IDLE_TIMEOUT {
                alive = false;
            }
            if alive {
                keep.push(c);
            }
        }
        connections = keep;
        if fds[0].revents & libc::POLLIN != 0 {
            accept_all(&listener, &mut connections);
        }
    }
}

fn accept_all(listener: &UnixListener, connections: &mut Vec<Connection>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if connections.len() >= MAX_CONNECTIONS {
                    // Best effort: a blocking write of one short line into a fresh socket's
                    // empty buffer does not block.
                    let mut stream = stream;
                    let line = handlers::error_response(&format!(
                        "too many control connections (at most {MAX_CONNECTIONS}); try again later"
                    ));
                    let _ = stream.write_all(format!("{line}\n").as_bytes());
                    continue;
                }
                if stream.set_nonblocking(true).is_ok() {
                    connections.push(Connection::new(stream));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                return;
            }
        }
    }
}
