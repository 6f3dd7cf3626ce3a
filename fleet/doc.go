// Package fleet is the one home of RouteHound's domain: the values the
// actors send and the built-in tables keep (driver points, assignments and
// their stops, loading events, devices), their validation and encoding,
// the names of the built-in tables and which actor writes each, and the
// rules for table names and keys.
//
// It imports nothing of the project, so that every front door (api, hub,
// ui, osmand), every reader (replica, ui) and the tools (sim, naive) apply
// the same rules and answer the same messages. Refusals are typed
// (NameError, BodyError, ReadOnlyError); Message gives the text a client
// is told, so that no caller needs to cut an error's text apart.
package fleet
