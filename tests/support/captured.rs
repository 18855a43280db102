//! A child process's stdout and stderr, copied into one buffer by threads so its pipes never
//! fill, for the tests to read while it runs and print when they fail.

use std::io::Read as _;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a child printed so far (stdout and stderr interleaved as they arrived).
#[derive(Clone, Default)]
pub struct Captured {
    text: Arc<Mutex<String>>,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Captured {
    /// Takes the child's piped stdout and stderr and starts copying them.
    pub fn of(child: &mut Child) -> Self {
        let captured = Self::default();
        let pipes = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ];
        for mut pipe in pipes.into_iter().flatten() {
            let sink = captured.text.clone();
            let reader = std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("output")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            captured.readers.lock().expect("readers").push(reader);
        }
        captured
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.text.lock().expect("output").clone()
    }

    /// After the child exited: waits until its pipes are read to the end, within `limit` (a
    /// grandchild that inherited them may hold them open), and returns everything.
    pub fn settle(&self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline
            && !self
                .readers
                .lock()
                .expect("readers")
                .iter()
                .all(JoinHandle::is_finished)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.text()
    }
}
