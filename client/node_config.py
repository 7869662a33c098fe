"""The node config keys of a device: what the device owner sets (`fedrec client` writes them), never the server.

Kept in a module of its own, importing nothing, so `fedrec client` (which only writes them) does not load the
ClientApp's dependencies: the `fedrec client` process stays alive beside the SuperNode for the device's whole life,
and every megabyte it holds counts in the device's memory.
"""

#: node_config key of a deployed device's state directory (set by the device owner, never by the server).
NODE_STATE_DIR = "state-dir"
#: node_config key of a deployed device's own history file (any format `fedrec.shared.data.load` reads).
NODE_DATA_PATH = "data-path"
#: node_config key naming the user to read when the history file holds several.
NODE_USER = "user"
#: node_config key of an explicit device id (ledger subject, report device id); default: the key's fingerprint.
NODE_DEVICE_ID = "device-id"
#: node_config key of a device's own record-level (lifetime) budget; the run's `record_dp.epsilon_max` can only
#: lower it.
NODE_EPSILON_MAX = "record-epsilon-max"
