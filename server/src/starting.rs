//! warmpool.v1 while warmpoold starts.
//!
//! The gRPC port is served from the moment it is bound, so that its health
//! answers (NOT_SERVING) during a start-up that can take many minutes (the
//! cloud check on a slow cloud, the start-up reconcile finishing or undoing
//! interrupted purchases and releases one at a time): a supervisor or a
//! kubelet then tells a daemon alive and starting from a dead one. The
//! warmpool.v1 service is not there yet (its calls need the start-up
//! reconcile done), so [`Starting`] answers its calls UNAVAILABLE until
//! [`Starting::serve`] hands it the service.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::Status;

/// What a warmpool.v1 call is answered while warmpoold starts.
pub const STARTING: &str = "warmpoold is starting: it checks the cloud and reconciles its store with it (finishing or undoing what a stop interrupted) before it takes calls; call again shortly (its gRPC health says SERVING once it does; the log tells what it is doing)";

/// What start-up waits for when it is more than its work: a state no
/// "call again shortly" ends (Keystone refused the credentials), told to
/// callers in its stead, so that a client's error says what an operator
/// must do rather than sending them to the log.
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Option<String>>>);

impl Note {
    /// Calls are answered `message` (a whole sentence) until
    /// [`Self::clear`].
    pub fn set(&self, message: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// Back to [`STARTING`].
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn message(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| STARTING.to_owned())
    }
}

/// `S` once [`Starting::serve`] has been called; until then every call is
/// answered UNAVAILABLE ([`STARTING`], or what its [`Note`] says).
pub struct Starting<S> {
    inner: Arc<OnceLock<S>>,
    note: Note,
}

impl<S> Clone for Starting<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            note: self.note.clone(),
        }
    }
}

impl<S> Default for Starting<S> {
    fn default() -> Self {
        Self {
            inner: Arc::new(OnceLock::new()),
            note: Note::default(),
        }
    }
}

impl<S> Starting<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the calls answered while starting say.
    pub fn note(&self) -> Note {
        self.note.clone()
    }

    /// Calls from now on go to `service`. Only the first call counts: the
    /// daemon starts once.
    pub fn serve(&self, service: S) {
        let _ = self.inner.set(service);
    }
}

impl<S: NamedService> NamedService for Starting<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Starting<S>
where
    S: Service<http::Request<B>, Response = http::Response<BoxBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The service, once there, is made ready for each call in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(service) = self.inner.get() else {
            let starting = Status::unavailable(self.note.message()).into_http();
            return Box::pin(std::future::ready(Ok(starting)));
        };
        let mut service = service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        })
    }
}
