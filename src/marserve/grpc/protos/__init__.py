"""The .proto sources of marserve's gRPC services and the modules generated from them."""
