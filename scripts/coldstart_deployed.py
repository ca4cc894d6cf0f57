"""The cold-start benchmark's production-shaped mode (scripts/bench.sh coldstart with
COLDSTART_SHAPE=deployed): turns a function's local environment (scripts/invoke_env.py's,
secrets in the environment, plain TCP to Postgres, the local keyring) into the deployed
one's shape, against the AWS emulator and Postgres behind the RTT relay
(benchmarks/src/bin/relay.rs):

- every secret the template gives the function by ARN is created in the emulator's
  Secrets Manager and named by its ARN (DB_SECRET_ARN, VAPI_SECRET_ARN,
  TWILIO_MAIN_SECRET_ARN, TOKEN_FINGERPRINT_SECRET_ARN), with the same values;
- the database login: DB_AUTH=password, the login's secret in the RDS layout
  ({username, password, engine, host, port, dbname}) reached over TLS (DB_TLS=verify-full,
  DB_CA_FILE the relay's certificate) through the relay's `pg` listener; or DB_AUTH=iam,
  DB_USER the login, through the relay's `pgiam` listener (an RDS Proxy stand-in that
  takes an IAM auth token);
- KEYRING=kms with the emulator's key;
- AWS_ENDPOINT_URL the relay's `aws` listener (TLS, the emulator behind it),
  AWS_CA_BUNDLE the relay's certificate.

  coldstart_deployed.py ENV_JSON... --relay READY.json --aws-url URL --cert PEM
      --auth password|iam --kms-key ARN

Rewrites each ENV_JSON in place and prints the database logins they use. The secrets' values are those the local environment
had (the stand-ins' keys, the local logins' password): nothing here is a real secret.
"""

import argparse
import json
import urllib.parse

import boto3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("env_files", nargs="+")
    ap.add_argument("--relay", required=True)
    ap.add_argument("--aws-url", required=True, help="the emulator itself (plain HTTP)")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--auth", choices=("password", "iam"), required=True)
    ap.add_argument("--kms-key", required=True)
    args = ap.parse_args()
    ports = json.load(open(args.relay))
    sm = boto3.client("secretsmanager", endpoint_url=args.aws_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")

    def secret(name, value):
        """The ARN of secret `name` holding `value` (JSON), created or updated."""
        body = json.dumps(value)
        try:
            return sm.create_secret(Name=name, SecretString=body)["ARN"]
        except sm.exceptions.ResourceExistsException:
            return sm.put_secret_value(SecretId=name, SecretString=body)["ARN"]

    logins = []
    for path in args.env_files:
        env = json.load(open(path))
        url = env.pop("DATABASE_URL", None)
        if url:
            u = urllib.parse.urlsplit(url)
            user = urllib.parse.unquote(u.username or "")
            dbname = urllib.parse.unquote(u.path.lstrip("/"))
            if user not in logins:
                logins.append(user)
            env.update(DB_HOST="127.0.0.1", DB_TLS="verify-full", DB_CA_FILE=args.cert)
            if args.auth == "password":
                env["DB_AUTH"] = "password"
                env["DB_PORT"] = str(ports["pg"])
                env["DB_SECRET_ARN"] = secret(f"coldstart/db/{user}", {
                    "username": user, "password": urllib.parse.unquote(u.password or ""),
                    "engine": "postgres", "host": "127.0.0.1", "port": ports["pg"],
                    "dbname": dbname})
            else:
                env.update(DB_AUTH="iam", DB_USER=user, DB_NAME=dbname,
                           DB_PORT=str(ports["pgiam"]))
        if "VAPI_PRIVATE_KEY" in env:
            env["VAPI_SECRET_ARN"] = secret("coldstart/vapi", {"privateKey": env.pop("VAPI_PRIVATE_KEY")})
        if "TWILIO_MAIN_AUTH_TOKEN" in env:
            env["TWILIO_MAIN_SECRET_ARN"] = secret("coldstart/twilio-main", {
                "accountSid": env.pop("TWILIO_MAIN_ACCOUNT_SID"),
                "authToken": env.pop("TWILIO_MAIN_AUTH_TOKEN")})
        if "TOKEN_FINGERPRINT_KEY" in env:
            env["TOKEN_FINGERPRINT_SECRET_ARN"] = secret(
                "coldstart/token-fingerprint", {"fingerprintKey": env.pop("TOKEN_FINGERPRINT_KEY")})
        if "KEYRING" in env:
            env.pop("LOCAL_KEYRING_FILE", None)
            env.pop("LOCAL_KEYRING_KEY", None)
            env.update(KEYRING="kms", KMS_KEY_ID=args.kms_key)
        # The relay binds 127.0.0.1 only (its certificate names the IP as well).
        env.update(AWS_ENDPOINT_URL=f"https://127.0.0.1:{ports['aws']}", AWS_CA_BUNDLE=args.cert)
        with open(path, "w") as f:
            json.dump(env, f, indent=1)
    print(" ".join(logins))


if __name__ == "__main__":
    main()
