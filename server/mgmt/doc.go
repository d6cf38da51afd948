// Package mgmt serves the management API: REST and JSON under /api/v1 for
// people, tetherctl and dashboards, with bearer tokens and role-based
// permissions, plus /healthz, /readyz and the OpenAPI document at
// /api/v1/openapi.json. Request and response bodies are the types of package
// api; domain error codes map to HTTP statuses in one place (errors.go).
//
// One route is not JSON: GET /api/v1/commands/{id}/progress streams a
// command's order counts as Server-Sent Events (progress.go).
package mgmt
