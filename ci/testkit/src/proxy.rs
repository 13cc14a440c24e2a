//! A loopback TCP proxy that injects faults between a client and a server:
//! resets, black holes, and cut connections.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does with new connections, and with those it forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Pass bytes both ways to the target.
    Forward,
    /// Accept, then reset at once (RST), as a crashing middlebox would;
    /// connections already forwarded are reset too.
    Reset,
    /// Accept and never answer, as a host behind a cut link would;
    /// connections already forwarded carry nothing until the mode changes
    /// back (as TCP holds its data while a link is down, and delivers it
    /// once the link returns).
    Blackhole,
}

struct State {
    target: SocketAddr,
    mode: Mutex<ProxyMode>,
    resets_pending: AtomicU32,
    accepted: AtomicU32,
    stopping: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// A proxy on a free loopback port in front of `target`; stops when dropped.
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A forwarding proxy in front of `target` (`127.0.0.1:PORT`).
    pub fn new(target: &str) -> FaultProxy {
        let target: SocketAddr = target.parse().expect("proxy target must be IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            target,
            mode: Mutex::new(ProxyMode::Forward),
            resets_pending: AtomicU32::new(0),
            accepted: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let acceptor_state = Arc::clone(&state);
        let acceptor = std::thread::spawn(move || accept_loop(listener, acceptor_state));
        FaultProxy {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes what happens to connections accepted from now on, and to
    /// those already forwarded (see [`ProxyMode`]).
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.state.mode.lock().unwrap() = mode;
        if mode == ProxyMode::Reset {
            for stream in self.state.open.lock().unwrap().drain(..) {
                // The copy threads hold the socket too: shutting it down ends
                // them, and their last close sends the RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Resets the next `count` connections, whatever the mode, then goes on as before.
    pub fn reset_next(&self, count: u32) {
        self.state.resets_pending.store(count, Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> u32 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every open connection (both directions), as a link failure would.
    pub fn cut_open_connections(&self) {
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_open_connections();
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for incoming in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let reset = state
            .resets_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mode = if reset {
            ProxyMode::Reset
        } else {
            *state.mode.lock().unwrap()
        };
        match mode {
            ProxyMode::Reset => reset_connection(client),
            ProxyMode::Blackhole => keep_open(&state, client),
            ProxyMode::Forward => {
                if let Err(client) = forward(&state, client) {
                    reset_connection(client);
                }
            }
        }
    }
}

/// Closes with SO_LINGER 0, which sends RST instead of FIN.
fn reset_connection(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn keep_open(state: &State, stream: TcpStream) {
    state.open.lock().unwrap().push(stream);
}

/// Connects to the target and copies bytes both ways on two threads.
fn forward(state: &Arc<State>, client: TcpStream) -> Result<(), TcpStream> {
    let server = match TcpStream::connect_timeout(&state.target, Duration::from_secs(5)) {
        Ok(server) => server,
        Err(_) => return Err(client),
    };
    let clones = (|| -> io::Result<_> {
        Ok((
            client.try_clone()?,
            server.try_clone()?,
            client.try_clone()?,
            server.try_clone()?,
        ))
    })();
    let Ok((client_reader, server_writer, client_handle, server_handle)) = clones else {
        return Err(client);
    };
    {
        let mut open = state.open.lock().unwrap();
        open.push(client_handle);
        open.push(server_handle);
    }
    spawn_copy(Arc::clone(state), client_reader, server_writer);
    spawn_copy(Arc::clone(state), server, client);
    Ok(())
}

/// Copies bytes one way until either side closes, holding them while the
/// proxy black-holes.
fn spawn_copy(state: Arc<State>, mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            while *state.mode.lock().unwrap() == ProxyMode::Blackhole
                && !state.stopping.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            if to.write_all(&chunk[..read]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
