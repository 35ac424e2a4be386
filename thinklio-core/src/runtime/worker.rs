//! The handle every background worker of the runtime returns: one
//! definition for the job, queue, interaction and retention workers.

/// Defines a worker handle `$name`: the stop signal of its loop and the
/// loop's task. The worker stops when its `stop` is called, when the handle
/// is dropped, or (as each loop checks) when the runtime shuts down.
/// `$stop_doc` says what `stop` waits for.
macro_rules! worker_handle {
    ($(#[$doc:meta])* $name:ident, $stop_doc:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            stop: tokio::sync::watch::Sender<bool>,
            handle: Option<tokio::task::JoinHandle<()>>,
        }

        impl $name {
            /// A handle on the loop `spawn` starts with the receiver of
            /// the stop signal.
            pub(in crate::runtime) fn spawn<F, Fut>(spawn: F) -> Self
            where
                F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
                Fut: std::future::Future<Output = ()> + Send + 'static,
            {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                Self {
                    stop,
                    handle: Some(tokio::spawn(spawn(stopped))),
                }
            }

            /// Whether its loop still runs (it stops when stopped or if it
            /// panicked): what a readiness check asks.
            pub fn is_running(&self) -> bool {
                self.handle.as_ref().is_some_and(|h| !h.is_finished())
            }

            #[doc = $stop_doc]
            pub async fn stop(mut self) {
                let _ = self.stop.send(true);
                if let Some(handle) = self.handle.take() {
                    let _ = handle.await;
                }
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                let _ = self.stop.send(true);
            }
        }
    };
}

pub(in crate::runtime) use worker_handle;
