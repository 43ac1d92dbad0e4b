package riverjob

// AttemptArgs reads args as jsonb prints an attempt's, without a decoder.
var AttemptArgs = attemptArgs
