//! A client's malformed frame is the client's error: INVALID_ARGUMENT with reason
//! `MALFORMED_REQUEST` (UNIMPLEMENTED for an unknown encoding), never INTERNAL, and the server
//! serves on. Sent over raw HTTP/2, byte for byte, as a hostile client would; then generated.

use bytes::Bytes;
use marketing_proto::v1 as pb;
use marketing_tests::{TestApp, assert_error};
use proptest::{prelude::*, test_runner::Config as ProptestConfig};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

const PATH: &str = "/marketing.v1.PointsAccountService/GetPointsAccount";

fn account_request() -> Vec<u8> {
    pb::GetPointsAccountRequest {
        tenant_id: "acme".into(),
        member_id: "m1".into(),
    }
    .encode_to_vec()
}

/// A gRPC frame: `flag`, a length prefix of `declared` bytes, then `payload`.
fn frame(flag: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn whole(payload: &[u8]) -> Vec<u8> {
    frame(0, u32::try_from(payload.len()).expect("small"), payload)
}

/// Sends `body` as one call of `PATH` (with `headers` added) on a new HTTP/2 connection; the
/// status it is answered with (from the headers of a trailers-only answer, or the trailers).
async fn send_raw(app: &TestApp, headers: &[(&str, &str)], body: Vec<u8>) -> Status {
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let mut request = http::Request::post(format!("http://{}{PATH}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = send
        .send_request(request.body(()).expect("request"), false)
        .expect("send headers");
    stream
        .send_data(Bytes::from(body), true)
        .expect("send body");
    let response = response.await.expect("an answer");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("some");
    Status::from_header_map(&trailers).expect("a grpc-status")
}

async fn every_malformed_frame_is_the_clients_error(app: &TestApp) {
    let message = account_request();
    let mut garbage_utf8 = Vec::new();
    // tenant_id (field 1, length-delimited) of two bytes that are not UTF-8.
    garbage_utf8.extend_from_slice(&[0x0a, 0x02, 0xff, 0xfe]);
    // What each case is, the headers it adds, its body.
    type Case = (&'static str, Vec<(&'static str, &'static str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "compressed-flag without grpc-encoding",
            vec![],
            frame(1, message.len() as u32, &message),
        ),
        (
            "compressed-flag with the identity encoding",
            vec![("grpc-encoding", "identity")],
            frame(1, message.len() as u32, &message),
        ),
        (
            "a flag of 2",
            vec![],
            frame(2, message.len() as u32, &message),
        ),
        (
            "a flag of 255",
            vec![],
            frame(255, message.len() as u32, &message),
        ),
        (
            "a length longer than the body",
            vec![],
            frame(0, message.len() as u32 + 100, &message),
        ),
        (
            "trailing bytes after the message",
            vec![],
            [whole(&message), vec![0, 0, 0]].concat(),
        ),
        ("no message at all", vec![], Vec::new()),
        ("half a length prefix", vec![], vec![0, 0]),
        (
            "bytes that are not UTF-8 in a string",
            vec![],
            whole(&garbage_utf8),
        ),
        ("a truncated varint", vec![], whole(&[0x10, 0xff])),
        ("an invalid wire type", vec![], whole(&[0x0f])),
    ];
    for (case, headers, body) in cases {
        let status = send_raw(app, &headers, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_error(&status, Code::InvalidArgument, "MALFORMED_REQUEST");
    }
    let unknown = send_raw(
        app,
        &[("grpc-encoding", "snappy-2000")],
        frame(1, message.len() as u32, &message),
    )
    .await;
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    // A well-formed call on a new connection is still answered as itself.
    let served = send_raw(app, &[], whole(&message)).await;
    assert_error(&served, Code::NotFound, "ACCOUNT_NOT_FOUND");
}

/// Frames built from generated parts: any flag, a length that may lie, any payload, any
/// trailing bytes. No answer is INTERNAL or UNKNOWN, and the server keeps serving.
async fn generated_frames_are_never_internal(app: &TestApp) {
    let strategy = (
        prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        prop_oneof![
            Just(None),
            (0u32..64).prop_map(Some),
            any::<u32>().prop_map(Some)
        ],
        prop_oneof![
            Just(account_request()),
            proptest::collection::vec(any::<u8>(), 0..48)
        ],
        proptest::collection::vec(any::<u8>(), 0..8),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |(flag, declared, payload, trailing)| {
        let declared = declared.unwrap_or(payload.len() as u32);
        let body = [frame(flag, declared, &payload), trailing].concat();
        let status = tokio::task::block_in_place(|| handle.block_on(send_raw(app, &[], body)));
        prop_assert!(
            !matches!(status.code(), Code::Internal | Code::Unknown),
            "{status:?}"
        );
        if status.code() != Code::Ok {
            prop_assert!(
                tonic_types::StatusExt::get_details_error_info(&status).is_some(),
                "no ErrorInfo: {status:?}"
            );
        }
        Ok(())
    });
    result.expect("no generated frame is answered INTERNAL");
    let served = send_raw(app, &[], whole(&account_request())).await;
    assert_error(&served, Code::NotFound, "ACCOUNT_NOT_FOUND");
}

marketing_tests::backend_suite! {
    every_malformed_frame_is_the_clients_error,
    generated_frames_are_never_internal,
}
