//! A lean gRPC client for unary etcd calls, straight on `h2`.
//!
//! The generator shares the machine with the servers it measures, so every
//! microsecond it spends per request is taken from them. tonic's `Channel`
//! puts a buffer task and a body task between a call and its connection,
//! and wrote to the socket about once per request (1.2 `writev` calls per
//! put at 100 clients, counted with `perf stat`). Here a call queues one
//! HEADERS and one DATA frame on the connection, so calls made in the same
//! turn of the runtime leave in one write.
//!
//! The socket is offered to h2 as [`Unvectored`], or a put of a 256-byte
//! value would still cost one write per request (see there).
//!
//! It speaks the same protocol: POST to `/<package>.<Service>/<Method>`,
//! `content-type: application/grpc`, a 5-byte length prefix before the
//! protobuf message, and the outcome in the `grpc-status` trailer (or
//! header, for a response with no body).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, TE};
use http::{HeaderMap, Method, Request, Uri};
use konsen_rpc::net::{MessageChunks, Unvectored};
use prost::Message;
use tokio::net::TcpStream;

/// Largest response message decoded, like the tonic client's limit.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The h2 flow-control windows offered to the server: large enough that
/// small responses never wait for a window update.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
// Header names known up front, so that no call parses one.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The connection or stream broke (h2 error).
    Transport(h2::Error),
    /// The server answered with a non-zero `grpc-status`.
    Status { code: u32, message: String },
    /// The response was not a gRPC response this client understands.
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Status { code, message } => write!(f, "status {code}: {message}"),
            CallError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl From<h2::Error> for CallError {
    fn from(e: h2::Error) -> Self {
        CallError::Transport(e)
    }
}

/// One HTTP/2 connection; clone it to share it between clients.
#[derive(Clone, Debug)]
pub struct Conn {
    send: SendRequest<Bytes>,
    authority: String,
}

impl Conn {
    /// Connects to `endpoint` (`host:port`, plain text) and starts the
    /// connection's task.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(endpoint).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake(Unvectored(tcp))
            .await?;
        tokio::spawn(async move {
            // Ends when every `SendRequest` is dropped or the peer closes;
            // calls in flight then fail with the error.
            let _ = connection.await;
        });
        Ok(Conn {
            send,
            authority: endpoint.to_string(),
        })
    }

    /// The URI of `method` (`/package.Service/Method`) on this connection.
    pub fn uri(&self, method: &str) -> anyhow::Result<Uri> {
        Ok(format!("http://{}{method}", self.authority).parse()?)
    }

    /// One unary call: `request` to `uri`, the decoded response back.
    pub async fn unary<Req: Message, Resp: Message + Default>(
        &mut self,
        uri: &Uri,
        request: &Req,
    ) -> Result<Resp, CallError> {
        let len = request.encoded_len();
        let Ok(len32) = u32::try_from(len) else {
            return Err(CallError::Protocol(format!(
                "a request of {len} bytes does not fit a gRPC frame"
            )));
        };
        let mut body = BytesMut::with_capacity(5 + len);
        body.put_u8(0); // not compressed
        body.put_u32(len32);
        request
            .encode(&mut body)
            .map_err(|e| CallError::Protocol(format!("encoding the request: {e}")))?;
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri.clone();
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        // Waits while the server's limit on concurrent streams is reached.
        std::future::poll_fn(|cx| self.send.poll_ready(cx)).await?;
        let (response, mut stream) = self.send.send_request(head, false)?;
        stream.send_data(body.freeze(), true)?;
        let (parts, mut body) = response.await?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(CallError::Protocol(format!("HTTP status {}", parts.status)));
        }
        // A response without a message carries its status in the headers.
        check_status(&parts.headers)?;
        let mut message = MessageChunks::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.received().len() + chunk.len() > 5 + RESPONSE_BYTES_MAX {
                return Err(CallError::Protocol(format!(
                    "response larger than {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            message.push(chunk);
        }
        let message = message.into_bytes();
        match body.trailers().await? {
            Some(trailers) => check_status(&trailers)?,
            None if grpc_status(&parts.headers).is_none() => {
                return Err(CallError::Protocol("no grpc-status".into()));
            }
            None => {}
        }
        decode(&message)
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn check_status(headers: &HeaderMap) -> Result<(), CallError> {
    match grpc_status(headers) {
        None | Some(0) => Ok(()),
        Some(code) => Err(CallError::Status {
            code,
            // Percent-encoded on the wire.
            message: headers
                .get(GRPC_MESSAGE)
                .map(|v| {
                    percent_encoding::percent_decode(v.as_bytes())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default(),
        }),
    }
}

/// Decodes one length-prefixed, uncompressed message.
fn decode<Resp: Message + Default>(framed: &[u8]) -> Result<Resp, CallError> {
    let Some((head, rest)) = framed.split_first_chunk::<5>() else {
        return Err(CallError::Protocol(format!(
            "a response of {} bytes has no message",
            framed.len()
        )));
    };
    if head[0] != 0 {
        return Err(CallError::Protocol("compressed response".into()));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(CallError::Protocol(format!(
            "message of {} bytes announced as {len}",
            rest.len()
        )));
    }
    Resp::decode(rest).map_err(|e| CallError::Protocol(format!("decoding the response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use konsen_rpc::etcd::etcdserverpb::{PutResponse, ResponseHeader};

    #[test]
    fn decodes_a_framed_message_and_refuses_broken_frames() {
        let mut framed = vec![0, 0, 0, 0, 0];
        assert!(decode::<PutResponse>(&framed).is_ok());
        framed[4] = 3; // announces 3 bytes that are not there
        assert!(matches!(
            decode::<PutResponse>(&framed),
            Err(CallError::Protocol(_))
        ));
        assert!(decode::<PutResponse>(&[0, 0]).is_err());
        framed[0] = 1;
        framed[4] = 0;
        assert!(decode::<PutResponse>(&framed).is_err(), "compressed");

        let sent = PutResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let message = sent.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        assert_eq!(decode::<PutResponse>(&framed).unwrap(), sent);
    }

    #[test]
    fn a_non_zero_grpc_status_is_an_error_with_its_message() {
        let mut headers = HeaderMap::new();
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", "14".parse().unwrap());
        headers.insert("grpc-message", "no%20leader".parse().unwrap());
        match check_status(&headers) {
            Err(CallError::Status { code, message }) => {
                assert_eq!((code, message.as_str()), (14, "no leader"));
            }
            other => panic!("expected a status error, got {other:?}"),
        }
    }
}
