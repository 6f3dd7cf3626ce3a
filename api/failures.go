package api

import (
	"net/http"
	"time"

	"routehound/internal/netguard"
)

// FailureLimiter counts failed authentications (401s, refused dashboard
// logins) per source address: past its max within its window the address
// is answered 429 too_many_failures until the window ends
// (netguard.FailureLimiter, which the phone listener uses too).
type FailureLimiter = netguard.FailureLimiter

// NewFailureLimiter allows max failures per source address within window
// (max 0: no limit).
func NewFailureLimiter(max int, window time.Duration) *FailureLimiter {
	return netguard.NewFailureLimiter(max, window)
}

// tooManyFailures is the refusal of a blocked source; retry is its
// Retry-After.
func tooManyFailures(retry time.Duration) *apiError {
	e := errorf(http.StatusTooManyRequests, "too_many_failures", "too many failed authentications from this address; retry after the Retry-After delay")
	e.retry = retry
	return e
}
