//! Request bodies: read whole, within `http.max_body_bytes` and
//! `http.client_body_timeout`, before any handler runs.
//!
//! actix-web times no body: a client that sends its head and part of a body
//! held the connection, and a graceful stop waited for it, for ever. Here a
//! request with a body is held back until the body has arrived, and
//! answered instead, with the connection closed, when it is too large
//! (413, from `Content-Length` alone when it says so), too slow (408), or
//! still arriving [`SHUTDOWN_GRACE`] after shutdown began (408 too: a
//! client that is sending gets it done well within the grace).
//!
//! Closing matters as much as answering: a body left unread would otherwise
//! be drained by actix-http after the answer, at the client's pace. Answers
//! here keep the unread body alive until they are sent, which makes
//! actix-http close the connection instead.
//!
//! Requests without a body (every redirect) pass straight through, at the
//! cost of one check.

use std::{
    cell::RefCell,
    fmt,
    future::{Ready, ready},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    Error, HttpMessage, HttpResponse, ResponseError,
    body::{BodySize, BoxBody, MessageBody},
    dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::{ConnectionType, StatusCode, header::CONTENT_LENGTH},
    web::{Bytes, BytesMut},
};
use futures_util::{
    StreamExt,
    future::{Either, LocalBoxFuture},
};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// How long a body still arriving when shutdown begins may take to finish:
/// long enough for a client that was mid-send, short enough that a stalled
/// upload does not hold the stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The limits of request bodies.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// From the end of the head to the end of the body.
    pub timeout: Duration,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Counts the bodies that did not arrive in time.
    pub timeouts: Counter,
}

/// The middleware (see the module documentation).
#[derive(Debug, Clone)]
pub struct ReadBody(pub Arc<BodyLimits>);

impl<S> Transform<S, ServiceRequest> for ReadBody
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error> + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = ReadBodyService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ReadBodyService {
            service: Rc::new(service),
            limits: Arc::clone(&self.0),
        }))
    }
}

#[derive(Debug)]
pub struct ReadBodyService<S> {
    service: Rc<S>,
    limits: Arc<BodyLimits>,
}

impl<S> Service<ServiceRequest> for ReadBodyService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = Error> + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future =
        Either<S::Future, LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, Error>>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let payload = req.take_payload();
        if matches!(payload, Payload::None) {
            return Either::Left(self.service.call(req));
        }
        let service = Rc::clone(&self.service);
        let limits = Arc::clone(&self.limits);
        Either::Right(Box::pin(async move {
            let mut payload = payload;
            match read(&mut payload, &req, &limits).await {
                Ok(body) => {
                    req.set_payload(Payload::from(body));
                    service.call(req).await
                }
                // An answer, not an error: it keeps the request, so the
                // request metrics know the route it was refused on.
                Err(error) => Ok(ServiceResponse::from_err(
                    RefusedBody {
                        error,
                        unread: RefCell::new(Some(payload)),
                    },
                    req.into_parts().0,
                )),
            }
        }))
    }
}

/// A body refused before it was read to its end.
///
/// Its answer carries the unread rest of the body until it is sent whole,
/// so that actix-http closes the connection rather than drain the rest at
/// the client's pace (which it does for a chunked body nobody holds once
/// the answer is out).
struct RefusedBody {
    error: ApiError,
    unread: RefCell<Option<Payload>>,
}

/// An answer's body that also holds the unread request body, until the
/// answer has been sent whole.
struct Holding {
    body: BoxBody,
    _unread: Payload,
}

impl MessageBody for Holding {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

impl fmt::Debug for RefusedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RefusedBody").field(&self.error).finish()
    }
}

impl fmt::Display for RefusedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for RefusedBody {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.error.error_response();
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        match self.unread.borrow_mut().take() {
            Some(unread) => response
                .map_body(|_, body| Holding {
                    body,
                    _unread: unread,
                })
                .map_into_boxed_body(),
            None => response,
        }
    }
}

/// The whole body, or why there is none to hand to the handler.
async fn read(
    payload: &mut Payload,
    req: &ServiceRequest,
    limits: &BodyLimits,
) -> Result<actix_web::web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(ApiError::PayloadTooLarge(limits.max_bytes));
    }
    // Grown as bytes arrive: a declared length costs nothing until sent.
    let mut body = BytesMut::with_capacity(declared.map_or(1024, |n| n as usize).min(4096));
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            chunk = payload.next() => match chunk {
                None => return Ok(body.freeze()),
                Some(Ok(chunk)) => {
                    if body.len() + chunk.len() > limits.max_bytes {
                        return Err(ApiError::PayloadTooLarge(limits.max_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
                Some(Err(error)) => {
                    return Err(ApiError::InvalidRequest(format!(
                        "the request body could not be read: {error}"
                    )));
                }
            },
            () = &mut deadline => {
                limits.timeouts.inc();
                return Err(if draining {
                    ApiError::BodyCutShort
                } else {
                    ApiError::BodyTimeout(limits.timeout)
                });
            }
            () = limits.shutdown.cancelled(), if !draining => {
                draining = true;
                let grace = Instant::now() + SHUTDOWN_GRACE;
                if grace < deadline.deadline() {
                    deadline.as_mut().reset(grace);
                }
            }
        }
    }
}
