//! Shutdown: one broadcast to stop, observed by every loop.
//!
//! A role's loop selects on [`Shutdown::wait`] next to its work; when it fires the loop
//! finishes what is in flight (deliveries, the current batch), commits synchronously and returns.

use tokio::sync::watch;

/// Held by whoever may stop the process.
#[derive(Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Held by every loop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// Triggers on Ctrl-C or SIGTERM.
    pub fn on_signals(self) {
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler installs");
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutdown requested: finishing in-flight work");
            self.trigger();
        });
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown was triggered (at once if it already was).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
