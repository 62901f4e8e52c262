fn main() {
    eprintln!("image-creator: not implemented yet");
    std::process::exit(1);
}
