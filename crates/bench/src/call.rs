//! `--call`: any unary RPC of the served API, by name, with JSON data, as ghz does it. The
//! method and its messages are found through server reflection (`grpc.reflection.v1`); the
//! data (and the metadata) may use ghz's template functions, rendered for each call:
//! `{{.RequestNumber}}`, `{{.WorkerID}}`, `{{.TimestampUnix}}`, `{{newUUID}}` and
//! `{{randomString N}}`.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use marketing_proto::raw::Raw;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tonic::{
    Status,
    metadata::{MetadataKey, MetadataValue},
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::runner::Conn;

/// What `--call` sends: the method, the data and metadata templates.
pub struct Call {
    method: MethodDescriptor,
    path: http::uri::PathAndQuery,
    data: Template,
    metadata: Vec<(MetadataKey<tonic::metadata::Ascii>, Template)>,
    concurrency: u64,
}

impl Call {
    /// Finds `name` (`package.Service/Method` or `package.Service.Method`) through the server's
    /// reflection and checks the data and metadata against it (one request rendered and
    /// parsed before any is sent).
    pub async fn resolve(
        channel: &Conn,
        name: &str,
        data: &str,
        metadata: Option<&str>,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let (service, method) = name
            .rsplit_once('/')
            .or_else(|| name.rsplit_once('.'))
            .with_context(|| format!("--call {name:?} is not package.Service/Method"))?;
        let pool = descriptors(channel, service).await?;
        let method = pool
            .get_service_by_name(service)
            .with_context(|| format!("the server serves no service {service}"))?
            .methods()
            .find(|m| m.name() == method)
            .with_context(|| format!("{service} has no method {method}"))?;
        if method.is_client_streaming() || method.is_server_streaming() {
            bail!("--call sends unary calls; {name} streams");
        }
        let path = format!("/{service}/{}", method.name())
            .parse()
            .context("the method's path")?;
        let metadata = match metadata {
            None => Vec::new(),
            Some(text) => {
                let pairs: HashMap<String, String> = serde_json::from_str(text)
                    .context("--metadata must be a JSON object of strings")?;
                pairs
                    .into_iter()
                    .map(|(key, value)| {
                        let key = MetadataKey::from_bytes(key.to_lowercase().as_bytes())
                            .with_context(|| format!("metadata key {key:?}"))?;
                        Ok((key, Template::parse(&value)?))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
        };
        let call = Call {
            method,
            path,
            data: Template::parse(data)?,
            metadata,
            concurrency: concurrency.max(1) as u64,
        };
        call.request(0)
            .with_context(|| format!("the data is not a {}", call.method.input().full_name()))?;
        Ok(call)
    }

    /// The `n`-th request: the data rendered and encoded, and the metadata rendered.
    fn request(&self, n: u64) -> anyhow::Result<tonic::Request<Vec<u8>>> {
        let values = Values {
            request: n,
            worker: n % self.concurrency,
        };
        let json = self.data.render(&values);
        let mut deserializer = serde_json::Deserializer::from_str(&json);
        let message = DynamicMessage::deserialize(self.method.input(), &mut deserializer)
            .with_context(|| format!("data {json}"))?;
        deserializer.end()?;
        let mut request = tonic::Request::new(message.encode_to_vec());
        for (key, value) in &self.metadata {
            let value: MetadataValue<tonic::metadata::Ascii> = value
                .render(&values)
                .parse()
                .context("a metadata value must be ASCII")?;
            request.metadata_mut().insert(key.clone(), value);
        }
        Ok(request)
    }

    /// Sends the `n`-th request on `channel`.
    pub async fn send(&self, channel: Conn, n: u64) -> Result<(), Status> {
        let request = self
            .request(n)
            .map_err(|err| Status::invalid_argument(format!("{err:#}")))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        grpc.unary(request, self.path.clone(), Raw).await.map(drop)
    }
}

/// The file that declares `symbol`, and every file it imports, from the server's reflection.
async fn descriptors(channel: &Conn, symbol: &str) -> anyhow::Result<DescriptorPool> {
    let mut client = ServerReflectionClient::new(channel.clone());
    let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(symbol.to_owned())];
    let mut asked = HashSet::new();
    while let Some(ask) = wanted.pop() {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(ask),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .context("server reflection (grpc.reflection.v1) is not served")?
            .into_inner();
        while let Some(answer) = answers.message().await? {
            match answer.message_response {
                Some(MessageResponse::FileDescriptorResponse(found)) => {
                    for bytes in found.file_descriptor_proto {
                        let file = FileDescriptorProto::decode(bytes.as_slice())?;
                        for import in &file.dependency {
                            if !files.contains_key(import) && asked.insert(import.clone()) {
                                wanted.push(MessageRequest::FileByFilename(import.clone()));
                            }
                        }
                        files.insert(file.name().to_owned(), file);
                    }
                }
                Some(MessageResponse::ErrorResponse(err)) => {
                    bail!("reflection: {} ({})", err.error_message, err.error_code)
                }
                _ => bail!("reflection answered something else"),
            }
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_set(FileDescriptorSet {
        file: files.into_values().collect(),
    })
    .context("the server's descriptors")?;
    Ok(pool)
}

/// A text with ghz's template actions in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestNumber,
    WorkerId,
    TimestampUnix,
    NewUuid,
    RandomString(usize),
}

/// What a call's template is rendered with.
struct Values {
    request: u64,
    worker: u64,
}

impl Template {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find("}}")
                .with_context(|| format!("an unclosed {{{{ in {text:?}"))?;
            let action = rest[start + 2..start + end].trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            parts.push(match words.as_slice() {
                [".RequestNumber"] => Part::RequestNumber,
                [".WorkerID"] => Part::WorkerId,
                [".TimestampUnix"] => Part::TimestampUnix,
                ["newUUID"] => Part::NewUuid,
                ["randomString", n] => Part::RandomString(
                    n.parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .with_context(|| format!("randomString takes 1 to 1024, not {n}"))?,
                ),
                _ => bail!(
                    "{{{{{action}}}}} is not one of .RequestNumber, .WorkerID, .TimestampUnix, newUUID, randomString N"
                ),
            });
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    fn render(&self, values: &Values) -> String {
        use rand::Rng as _;
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::RequestNumber => out.push_str(&values.request.to_string()),
                Part::WorkerId => out.push_str(&values.worker.to_string()),
                Part::TimestampUnix => out.push_str(
                    &std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |now| now.as_secs())
                        .to_string(),
                ),
                Part::NewUuid => out.push_str(&uuid::Uuid::new_v4().to_string()),
                Part::RandomString(n) => out.extend(
                    rand::rng()
                        .sample_iter(rand::distr::Alphanumeric)
                        .take(*n)
                        .map(char::from),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_ghz_actions_per_call() {
        let template = Template::parse(
            r#"{"request_id":"r-{{.RequestNumber}}","member_id":"m{{ .WorkerID }}","x":"{{randomString 8}}","u":"{{newUUID}}"}"#,
        )
        .expect("parses");
        let rendered = template.render(&Values {
            request: 41,
            worker: 3,
        });
        let json: serde_json::Value = serde_json::from_str(&rendered).expect("json");
        assert_eq!(json["request_id"], "r-41");
        assert_eq!(json["member_id"], "m3");
        assert_eq!(json["x"].as_str().map(str::len), Some(8));
        assert!(uuid::Uuid::parse_str(json["u"].as_str().expect("u")).is_ok());
        assert!(Template::parse("{{.Nope}}").is_err());
        assert!(Template::parse("{{randomString 0}}").is_err());
        assert!(Template::parse("{{ unclosed").is_err());
        assert_eq!(
            Template::parse("plain").expect("text").render(&Values {
                request: 0,
                worker: 0
            }),
            "plain"
        );
    }
}
