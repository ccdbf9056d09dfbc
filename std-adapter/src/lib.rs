//! sockserv on real sockets (lands with the std-adapter issue).
