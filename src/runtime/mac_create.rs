//! The one Docker call bollard 0.21 cannot make: a container create with the
//! container-level `MacAddress`. Docker engines before API 1.44 (20.10 is 1.41) honour
//! only that one (a `MacAddress` in `NetworkingConfig.EndpointsConfig` is ignored
//! there), and bollard's `ContainerCreateBody` no longer has the field. Agents' egress
//! rules are keyed on the MAC address (`crate::egress`), so the body is sent here, over
//! the local socket, with both set to the same address (newer engines read the
//! endpoint's).
//!
//! HTTP/1.0, one request per connection: the answer then ends when the connection
//! does, without chunked encoding. Errors come back as bollard's, so the engine's one
//! mapping ([`super::engine`]) reads them.

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ContainerCreateResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Creates container `name` from `body` with MAC address `mac`, through the Docker socket
/// at `socket`.
pub async fn create_with_mac(
    socket: &str,
    name: &str,
    body: &ContainerCreateBody,
    mac: &str,
) -> Result<ContainerCreateResponse, BollardError> {
    let mut json = serde_json::to_value(body)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("MacAddress".into(), mac.into());
    }
    let payload = serde_json::to_vec(&json)?;
    let head = format!(
        "POST /containers/create?name={name} HTTP/1.0\r\nHost: docker\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&payload).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let (status, body) = split_answer(&answer)?;
    if status == 201 {
        return Ok(serde_json::from_slice(body)?);
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    Err(BollardError::DockerResponseServerError {
        status_code: status,
        message,
    })
}

/// The status code and body of an HTTP/1.x answer.
fn split_answer(answer: &[u8]) -> Result<(u16, &[u8]), BollardError> {
    let malformed = || BollardError::IOError {
        err: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "Docker's answer to a create is not HTTP",
        ),
    };
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| malformed())?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    Ok((status, &answer[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_its_status_and_body() {
        let (status, body) = split_answer(
            b"HTTP/1.0 201 Created\r\nContent-Type: application/json\r\n\r\n{\"Id\":\"x\"}",
        )
        .unwrap();
        assert_eq!(status, 201);
        assert_eq!(body, b"{\"Id\":\"x\"}");
        assert!(split_answer(b"garbage").is_err());
    }
}
