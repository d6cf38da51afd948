package natsjs

// SetAfterPublish makes s call f after publishing each message of a Write,
// with its index in the batch.
func SetAfterPublish(s *Sink, f func(i int)) { s.afterPublish = f }

var SubjectToken = subjectToken

var TakesPrefix = takesPrefix
