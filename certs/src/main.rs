fn main() {
    eprintln!("mock-kind-certs: not implemented yet (see the webhook and certificates issue)");
    std::process::exit(2);
}
