// Package fleetevents derives route progress and fleet events from the
// durable log (issue 21): the fleet-events consumer follows the engine's
// durability feed from a cursor it persists, computes stop arrivals,
// departures and skips (Tracker) and writes them, with the routes'
// progress and its cursor, in one atomic write through the events lane.
// A crash or a power cut at any moment leaves each transition in the log
// exactly once: the consumer resumes from the cursor written with the last
// events, and a write whose range of the log is already covered changes
// nothing. No write is larger than the engine takes: what one record
// decides beyond a write is written in parts, with the cursor inside the
// record (engine.CursorValue.Part), and a restart goes on from the part
// the store holds.
package fleetevents
