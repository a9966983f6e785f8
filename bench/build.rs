//! Generates tonic's client and server for the bench's service, described in Rust: no
//! `.proto` file, so no protoc at build time. The messages are hand-written prost structs
//! (`src/grpc.rs`) carried by tonic's prost codec, as generated code would carry them.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic::codec::ProstCodec")
            .build()
    };
    let service = tonic_build::manual::Service::builder()
        .name("Bench")
        .package("bench")
        .method(method(
            "add",
            "Add",
            "crate::grpc::AddRequest",
            "crate::grpc::AddReply",
        ))
        .method(method(
            "echo",
            "Echo",
            "crate::grpc::Blob",
            "crate::grpc::Blob",
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
