// SPDX-License-Identifier: Apache-2.0

package kpemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

const grantAPIKey = "urn:ibm:params:oauth:grant-type:apikey"

// tokenClaims is the body of the emulator's access tokens: a JWT signed with
// HS256 under a key kept in the state file, so tokens outlive a restart as
// IAM's do. The subject names the API key by a hash, never the key itself.
type tokenClaims struct {
	Sub string `json:"sub"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Jti string `json:"jti"`
	Iss string `json:"iss"`
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"kpemu"}`))

func (s *Server) signToken(c tokenClaims) string {
	body, _ := json.Marshal(c)
	msg := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, s.signKey)
	m.Write([]byte(msg))
	return msg + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verifyToken checks a token's signature and expiry and that its API key
// still has access, and returns its subject (the API key's id). ok=false
// means 401.
func (s *Server) verifyToken(tok string, now time.Time) (sub string, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != jwtHeader {
		return "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", false
	}
	m := hmac.New(sha256.New, s.signKey)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, m.Sum(nil)) {
		return "", false
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c tokenClaims
	if json.Unmarshal(body, &c) != nil || now.Unix() >= c.Exp {
		return "", false
	}
	s.mu.RLock()
	st, known := s.apiKeys[c.Sub]
	s.mu.RUnlock()
	return c.Sub, known && !st.revoked
}

// iamError is IAM's error shape, which differs from Key Protect's.
type iamError struct {
	ErrorCode    string     `json:"errorCode"`
	ErrorMessage string     `json:"errorMessage"`
	Context      iamContext `json:"context"`
}

type iamContext struct {
	RequestID   string `json:"requestId"`
	RequestType string `json:"requestType"`
	UserAgent   string `json:"userAgent"`
	URL         string `json:"url"`
	InstanceID  string `json:"instanceId"`
	ThreadID    string `json:"threadId"`
	Host        string `json:"host"`
	StartTime   string `json:"startTime"`
	EndTime     string `json:"endTime"`
	ElapsedTime string `json:"elapsedTime"`
	Locale      string `json:"locale"`
	ClusterName string `json:"clusterName"`
}

type iamToken struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ImsUserID    int64  `json:"ims_user_id"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Expiration   int64  `json:"expiration"`
	Scope        string `json:"scope"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	fail := func(status int, code, msg string) {
		end := s.now()
		writeJSON(w, status, iamError{
			ErrorCode:    code,
			ErrorMessage: msg,
			Context: iamContext{
				RequestID:   newUUID(),
				RequestType: "incoming.OIDC_Token",
				UserAgent:   r.UserAgent(),
				URL:         "http://" + r.Host,
				InstanceID:  "iamid-kpemu",
				ThreadID:    "1",
				Host:        "kpemu",
				StartTime:   start.Format("02.01.2006 15:04:05:000 MST"),
				EndTime:     end.Format("02.01.2006 15:04:05:000 MST"),
				ElapsedTime: end.Sub(start).String(),
				Locale:      "en_US",
				ClusterName: "kpemu",
			},
		})
	}
	if err := r.ParseForm(); err != nil {
		if isTooLarge(err) {
			fail(http.StatusRequestEntityTooLarge, "BXNIM0109E", "Request body too large")
			return
		}
		fail(http.StatusBadRequest, "BXNIM0109E", "Property missing or empty. Property name: grant_type")
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch {
	case grant == "":
		fail(http.StatusBadRequest, "BXNIM0109E", "Property missing or empty. Property name: grant_type")
		return
	case grant != grantAPIKey:
		fail(http.StatusBadRequest, "BXNIM0104E", "Grant type is not supported. Grant type: "+grant)
		return
	}
	apiKey := r.PostForm.Get("apikey")
	if apiKey == "" {
		fail(http.StatusBadRequest, "BXNIM0109E", "Property missing or empty. Property name: apikey")
		return
	}
	id := apiKeyID(apiKey)
	s.mu.RLock()
	_, known := s.apiKeys[id]
	s.mu.RUnlock()
	if !known {
		fail(http.StatusBadRequest, "BXNIM0415E", "Provided API key could not be found")
		return
	}
	// Tokens live on the wall clock, not the emulator's movable clock: a
	// client caches its token by its own clock, and moving key time (to
	// expire keys or pass waiting periods) must not invalidate it.
	ttl := s.cfg.TokenTTL
	issued := time.Now()
	tok := s.signToken(tokenClaims{Sub: id, Iat: issued.Unix(), Exp: issued.Add(ttl).Unix(), Jti: newUUID(), Iss: "kpemu"})
	writeJSON(w, http.StatusOK, iamToken{
		AccessToken:  tok,
		RefreshToken: "not_supported",
		TokenType:    "Bearer",
		ExpiresIn:    int64(ttl / time.Second),
		Expiration:   issued.Add(ttl).Unix(),
		Scope:        "ibm openid",
	})
}
