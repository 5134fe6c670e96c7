package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/kbackup/kbackup/store"
)

// errorCode returns the S3 error code and HTTP status of err ("" and 0
// when it has none, e.g. a network error).
func errorCode(err error) (code string, status int) {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	return code, status
}

// wrap adds the operation and object to err and maps S3 errors onto the
// store sentinels. op is e.g. "put"; key "" names the store itself.
func (s *Store) wrap(op, key string, err error) error {
	where := s.url(key)
	if key == "" {
		where = s.desc
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, where, err)
	}
	code, status := errorCode(err)
	switch {
	case code == "NoSuchBucket" || (key == "" && status == http.StatusNotFound):
		return fmt.Errorf("%s %s: bucket %s does not exist: %w: %w", op, where, s.bucket, store.ErrPermanent, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w", op, where, store.ErrNotFound)
	case code == "PreconditionFailed" || code == "ConditionalRequestConflict" ||
		status == http.StatusPreconditionFailed:
		return fmt.Errorf("%s %s: %w", op, where, store.ErrExists)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
		code == "ExpiredToken" || code == "InvalidToken" || code == "TokenRefreshRequired":
		return fmt.Errorf("%s %s: invalid credentials for s3://%s/%s (%s): check credentials: %w: %w",
			op, where, s.bucket, s.prefix, code, store.ErrPermanent, err)
	case code == "AccessDenied" || code == "AllAccessDisabled" || code == "AccountProblem" ||
		code == "Forbidden" || status == http.StatusForbidden:
		return fmt.Errorf("%s %s: access denied to s3://%s/%s: check credentials and bucket policy: %w: %w",
			op, where, s.bucket, s.prefix, store.ErrPermanent, err)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" ||
		status == http.StatusMovedPermanently:
		return fmt.Errorf("%s %s: bucket %s is in another region: set the region: %w: %w",
			op, where, s.bucket, store.ErrPermanent, err)
	case code == "InvalidBucketName":
		return fmt.Errorf("%s %s: invalid bucket name %q: %w: %w", op, where, s.bucket, store.ErrPermanent, err)
	case code == "InvalidArgument" || code == "KMS.NotFoundException" || code == "KMS.DisabledException":
		// Typically a bad SSE/KMS setting; retrying repeats it.
		return fmt.Errorf("%s %s: %w: %w", op, where, store.ErrPermanent, err)
	}
	return fmt.Errorf("%s %s: %w", op, where, err)
}
