//! The worker's in-process route to the gateway (one process, or a worker without `GATEWAY_HTTP_URL`):
//! the dispatch body goes to the gateway service as it would over `/internal/v1/dispatch-async`.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::domain::gateway::dispatch::DispatchRequest;
use crate::domain::gateway::{Gateway, GatewayError};
use crate::domain::runs::remote::{DispatchBody, DispatchError, RemoteDispatch};

pub struct LocalGateway(pub Arc<Gateway>);

impl RemoteDispatch for LocalGateway {
    fn dispatch<'a>(&'a self, body: &'a DispatchBody) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async move {
            // The same JSON the HTTP route parses: one contract, checked the same way.
            let request: DispatchRequest = serde_json::to_value(body)
                .and_then(serde_json::from_value)
                .map_err(|_| DispatchError::Invalid)?;
            if !request.is_valid() {
                return Err(DispatchError::Invalid);
            }
            match self.0.dispatch_async(request).await {
                Ok(_) => Ok(()),
                Err(GatewayError::Unavailable(_)) => Err(DispatchError::Unavailable),
                Err(_) => Err(DispatchError::Failed),
            }
        })
    }
}
