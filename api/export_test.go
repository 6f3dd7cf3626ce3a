package api

// Unexported functions the external tests (package api_test) check.
var (
	AppendAckForTest     = appendAck
	AppendDurableForTest = appendDurable
)
