//! The DNS server: hickory-server's wire handling over UDP and TCP, answering from a
//! [`Zone`] for the one tenant a listener belongs to. A tenant's pods reach its
//! listener, never another tenant's, so the listener a query arrives on is who asks.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::{MessageRequest, MessageResponseBuilder};
use hickory_server::proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::{TcpListener, UdpSocket};

use crate::zone::{Answer, Zone};

/// How long a TCP client may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one tenant's queries.
pub struct TenantHandler {
    zone: Arc<Zone>,
    tenant: String,
}

impl TenantHandler {
    /// The handler of `tenant`'s queries.
    pub fn new(zone: Arc<Zone>, tenant: impl Into<String>) -> Self {
        Self {
            zone,
            tenant: tenant.into(),
        }
    }

    /// The answer to a decoded request: one question of a standard query, else an error
    /// code (FORMERR for none or several, NOTIMP for other operations).
    pub fn answer(&self, request: &MessageRequest) -> Answer {
        let code = |c| Answer {
            code: c,
            answers: Vec::new(),
            additionals: Vec::new(),
        };
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return code(ResponseCode::NotImp);
        }
        match request.queries() {
            [q] => self
                .zone
                .answer(&self.tenant, &q.name().into(), q.query_type()),
            _ => code(ResponseCode::FormErr),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for TenantHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let answer = self.answer(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(answer.code != ResponseCode::Refused);
        header.set_recursion_available(false);
        header.set_response_code(answer.code);
        let message = MessageResponseBuilder::from_message_request(request).build(
            header,
            answer.answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: cannot send a response");
                let mut h = Header::response_from_request(request.header());
                h.set_response_code(ResponseCode::ServFail);
                h.into()
            }
        }
    }
}

/// Serves `tenant`'s names from `zone` on `udp` and `tcp` until the returned server is
/// shut down or dropped.
pub fn serve(
    zone: Arc<Zone>,
    tenant: &str,
    udp: UdpSocket,
    tcp: TcpListener,
) -> ServerFuture<TenantHandler> {
    let mut server = ServerFuture::new(TenantHandler::new(zone, tenant));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    server
}
