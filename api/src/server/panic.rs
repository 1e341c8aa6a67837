//! A panic while answering a request becomes that request's `500`.
//!
//! A panic is a bug, and no input should reach one; this is the defence in
//! depth. Without it, a panicking handler drops its connection without an
//! answer, uncounted. Here it is answered with an opaque `500` problem
//! (its message and location are in the log, written once by the panic
//! hook of [`runtime::panics`]), counted by the request metrics that wrap
//! it, and the worker goes on serving. Nothing a handler shares is left half
//! changed: locks across awaits are Tokio's (which do not poison), and the
//! stores' writes are transactions.

use std::{
    any::Any,
    future::{Future, Ready, ready},
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::{
    Error, HttpRequest,
    body::BoxBody,
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
};
use futures_util::{FutureExt, future::CatchUnwind};
use pin_project_lite::pin_project;

use crate::error::ApiError;

/// The middleware (see the module documentation).
///
/// [`CatchPanic::ROUTED`] wraps every route: its `500` carries the
/// request, so the request metrics and the access log know whose route
/// panicked. [`CatchPanic::OUTER`] wraps the whole application, for a
/// panic in a middleware or the router, before any route took the request
/// (it cannot hold the request: routing needs it unshared).
#[derive(Debug, Clone, Copy)]
pub struct CatchPanic {
    routed: bool,
}

impl CatchPanic {
    pub const ROUTED: Self = Self { routed: true };
    pub const OUTER: Self = Self { routed: false };
}

impl<S> Transform<S, ServiceRequest> for CatchPanic
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error>,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = CatchPanicService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CatchPanicService {
            service,
            routed: self.routed,
        }))
    }
}

#[derive(Debug)]
pub struct CatchPanicService<S> {
    service: S,
    routed: bool,
}

impl<S> Service<ServiceRequest> for CatchPanicService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error>,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = Caught<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // A shared handle (a count on the request), kept to answer with.
        let request = self.routed.then(|| req.request().clone());
        // A panic in `call` itself (routing, extractors run later) is caught
        // as well as one while the answer is polled.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(req))) {
            Ok(future) => Caught::Running {
                future: AssertUnwindSafe(future).catch_unwind(),
                request,
            },
            Err(panic) => Caught::Panicked {
                panic: Some(panic),
                request,
            },
        }
    }
}

pin_project! {
    /// A request's answer, with its panic turned into a `500`.
    #[project = CaughtProj]
    pub enum Caught<F> {
        Running {
            #[pin]
            future: CatchUnwind<AssertUnwindSafe<F>>,
            request: Option<HttpRequest>,
        },
        Panicked {
            panic: Option<Box<dyn Any + Send>>,
            request: Option<HttpRequest>,
        },
    }
}

impl<F> std::fmt::Debug for Caught<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running { .. } => "Caught::Running",
            Self::Panicked { .. } => "Caught::Panicked",
        })
    }
}

impl<F> Future for Caught<F>
where
    F: Future<Output = Result<ServiceResponse<BoxBody>, Error>>,
{
    type Output = Result<ServiceResponse<BoxBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (panic, request) = match self.project() {
            CaughtProj::Running { future, request } => match std::task::ready!(future.poll(cx)) {
                Ok(result) => return Poll::Ready(result),
                Err(panic) => (panic, request.take()),
            },
            CaughtProj::Panicked { panic, request } => {
                (panic.take().unwrap_or_else(|| Box::new("")), request.take())
            }
        };
        // The panic hook has logged it, with its message and location.
        drop(panic);
        Poll::Ready(match request {
            Some(request) => Ok(ServiceResponse::from_err(ApiError::Panicked, request)),
            None => Err(ApiError::Panicked.into()),
        })
    }
}
