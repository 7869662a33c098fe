"""What a deployed federation needs beyond the model: the public catalog handshake (`catalog`), TLS material
(`tls`), SuperNode keys (`node_keys`), the stable node order (`node_order`) and the processes the CLI starts and
stops (`processes`)."""
