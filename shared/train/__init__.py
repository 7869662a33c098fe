"""Training on a device: examples from a history (`examples`), the local step loop (`local`) and its record-level
private counterpart, Opacus DP-SGD over fixed example slots (`dp_sgd`)."""
