"""The environment scripts/invoke.sh gives one function: its template.yaml Environment
(Globals merged with the function's own, CloudFormation's intrinsics resolved with the
parameters of samconfig.toml and the command line, AWS::NoValue dropped), then the
local stand-ins for what needs AWS (each override printed), then what Lambda itself
sets (AWS_LAMBDA_FUNCTION_NAME, memory, timeout, region, ...).

  python3 invoke_env.py LOGICAL_ID OUT_ENV_JSON [--config-env NAME]
      [--parameter-overrides 'K=V K2=V2' ...] [--env K=V ...] [--unset K ...]

Local values come from the environment: INVOKE_DATABASE_URL, INVOKE_STANDINS_URL,
INVOKE_KEYRING_FILE / LOCAL_KEYRING_KEY, VAPI_PRIVATE_KEY, TWILIO_MAIN_ACCOUNT_SID,
TWILIO_MAIN_AUTH_TOKEN, AWS_ENDPOINT_URL (the AWS emulator, passed on when set).

The database login follows the template's role split: a function whose DB_SECRET_ARN /
DB_USER is the route role's (DbRouteSecretArn / DbRouteUser) gets INVOKE_DATABASE_URL
as the local route login, list-numbers (the reader's) as the local read-only login,
migrate (the owner's) INVOKE_DATABASE_URL itself, plus DB_ROUTE_USER / DB_READER_USER
and their passwords so it sets those logins up as deployed migrate does. The local
logins are the ones the local API sets up on its database (local-api/src/database.rs:
`<database>_route_login` and `<database>_read_login`, with the owner's password);
INVOKE_ROUTE_DATABASE_URL / INVOKE_READER_DATABASE_URL name others, and
INVOKE_DB_ROLES=owner runs every function as the owner instead.
Prints shell assignments (ARCH, TIMEOUT, MEMORY, FUNCTION_NAME) on stdout; the
overrides go to stderr. Needs PyYAML (the SAM CLI venv has it) and Python 3.11+.
"""

import argparse
import json
import os
import pathlib
import re
import shlex
import sys
import tomllib
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
REGION_DEFAULT = "us-east-1"
# The Vapi/Twilio stand-ins' credentials (local-api/src/standins/mod.rs).
LOCAL_VAPI_KEY = "local-vapi-private-key"
LOCAL_TWILIO_MAIN_SID = "AC00000000000000000000000000000001"
LOCAL_TWILIO_MAIN_TOKEN = "11111111111111111111111111111111"
# local-api/src/server.rs's LOCAL_TOKEN_FINGERPRINT_KEY: the same key as the local API,
# so a function invoked here fingerprints tokens as the local API's functions do.
LOCAL_TOKEN_FINGERPRINT_KEY = "local-dev-only-token-fingerprint-key-0123456789"


class Loader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


Loader.add_multi_constructor("!", _tag)

NO_VALUE = object()


def say(msg):
    print(f"invoke: {msg}", file=sys.stderr)


class Resolver:
    def __init__(self, template, params, stack, region):
        self.t = template
        self.params = params
        self.pseudo = {
            "AWS::StackName": stack,
            "AWS::Region": region,
            "AWS::AccountId": "000000000000",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{region}:000000000000:stack/{stack}/local",
        }
        self.unresolved = set()
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.t.get("Conditions", {})[name]))
        return self.conditions[name]

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.t.get("Parameters", {}):
            self.unresolved.add(name)
            return f"UNRESOLVED-{name}"
        # A resource: its physical id would be a name or an ARN; a local stand-in name.
        return f"local-{name}"

    def getatt(self, res, attr):
        typ = self.t.get("Resources", {}).get(res, {}).get("Type", "")
        service = typ.split("::")[1].lower() if "::" in typ else "local"
        if attr == "Arn":
            return f"arn:aws:{service}:{self.pseudo['AWS::Region']}:000000000000:{res}/local"
        return f"local-{res}-{attr}"

    def value(self, v):
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict) or len(v) != 1:
            return v
        (k, a), = v.items()
        if k == "Ref":
            return self.ref(a)
        if k == "Condition":
            return self.condition(a)
        if k == "Fn::GetAtt":
            return self.getatt(a[0], a[1])
        if k == "Fn::If":
            return self.value(a[1] if self.condition(a[0]) else a[2])
        if k == "Fn::Equals":
            x, y = (self.value(i) for i in a)
            return str(x) == str(y)
        if k == "Fn::Not":
            return not self.value(a[0])
        if k == "Fn::And":
            return all(self.value(i) for i in a)
        if k == "Fn::Or":
            return any(self.value(i) for i in a)
        if k == "Fn::Join":
            return a[0].join(str(x) for x in self.value(a[1]))
        if k == "Fn::Select":
            return self.value(a[1])[int(self.value(a[0]))]
        if k == "Fn::Split":
            return str(self.value(a[1])).split(a[0])
        if k == "Fn::FindInMap":
            m, top, second = (str(self.value(i)) for i in a)
            return self.t.get("Mappings", {})[m][top][second]
        if k == "Fn::Sub":
            text, extra = (a, {}) if isinstance(a, str) else (a[0], a[1])
            extra = {n: self.value(x) for n, x in extra.items()}
            out, i = [], 0
            while i < len(text):
                j = text.find("${", i)
                if j < 0:
                    out.append(text[i:])
                    break
                out.append(text[i:j])
                end = text.index("}", j)
                name = text[j + 2:end]
                if name.startswith("!"):
                    out.append("${" + name[1:] + "}")
                elif name in extra:
                    out.append(str(extra[name]))
                elif "." in name:
                    out.append(self.getatt(*name.split(".", 1)))
                else:
                    out.append(str(self.ref(name)))
                i = end + 1
            return "".join(out)
        return v


# The template's database roles: which parameters name each role's login.
DB_ROLE_PARAMS = {
    "owner": ("DbOwnerSecretArn", "DbOwnerUser"),
    "route": ("DbRouteSecretArn", "DbRouteUser"),
    "reader": ("DbReaderSecretArn", "DbReaderUser"),
}


def names(node):
    """The parameters and resources a template node refers to (Ref, ${...} of Sub)."""
    out = set()
    if isinstance(node, list):
        for x in node:
            out |= names(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out |= set(re.findall(r"\$\{([A-Za-z0-9_:]+)\}", text))
            else:
                out |= names(v)
    return out


def db_role(raw_env):
    """The database role whose login the function's DB_SECRET_ARN / DB_USER name."""
    used = names([raw_env.get("DB_SECRET_ARN"), raw_env.get("DB_USER")])
    for role, params in DB_ROLE_PARAMS.items():
        if used & set(params):
            return role
    return None


def local_login_name(dbname, suffix):
    """local-api/src/database.rs login_name: the local login of a role on dbname."""
    suffix = f"{suffix}_login"
    base = "".join(c if c in "abcdefghijklmnopqrstuvwxyz0123456789_" else
                   c.lower() if "A" <= c <= "Z" else "_" for c in dbname)[:63 - len(suffix) - 2]
    if base[:1].isdigit():
        base = "_" + base
    return f"{base}_{suffix}"


def as_login(url, user):
    """url with its user replaced (the password, host, database and options kept)."""
    u = urllib.parse.urlsplit(url)
    password = urllib.parse.unquote(u.password or "")
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host}"
    if u.port:
        netloc += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def parse_overrides(items):
    out = {}
    for item in items:
        for pair in shlex.split(item) if isinstance(item, str) else [item]:
            k, _, val = pair.partition("=")
            out[k] = val
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("logical_id")
    ap.add_argument("out")
    ap.add_argument("--config-env")
    ap.add_argument("--parameter-overrides", action="append", default=[])
    ap.add_argument("--env", action="append", default=[], help="K=V after everything else")
    ap.add_argument("--unset", action="append", default=[])
    ap.add_argument("--arch")
    args = ap.parse_args()

    t = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    res = t.get("Resources", {}).get(args.logical_id)
    if not res or res.get("Type") != "AWS::Serverless::Function":
        funcs = [n for n, r in t["Resources"].items() if r.get("Type") == "AWS::Serverless::Function"]
        sys.exit(f"invoke: {args.logical_id} is not a function of template.yaml ({', '.join(funcs)})")

    # Parameters: the template's defaults, then samconfig.toml's deploy parameter_overrides
    # (the --config-env, else default, else staging: the first that has any), then the
    # command line's.
    cfg = tomllib.loads((ROOT / "samconfig.toml").read_text())
    envs = [args.config_env] if args.config_env else ["default", "staging"]
    chosen, from_cfg = None, {}
    for name in envs:
        po = cfg.get(name, {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides")
        if po:
            chosen = name
            from_cfg = parse_overrides(po if isinstance(po, list) else [po])
            break
    params = {n: str(p["Default"]) for n, p in t.get("Parameters", {}).items() if "Default" in p}
    params.update(from_cfg)
    params.update(parse_overrides(args.parameter_overrides))
    glob = cfg.get(chosen or "default", {}).get("global", {}).get("parameters", {})
    stack = glob.get("stack_name") or cfg.get("default", {}).get("global", {}).get("parameters", {}).get("stack_name", "local")
    region = os.environ.get("AWS_REGION") or glob.get("region") or REGION_DEFAULT
    say(f"parameters: template defaults + samconfig.toml [{chosen}] parameter_overrides"
        + (" + command line" if args.parameter_overrides else "") if chosen else
        "parameters: template defaults" + (" + command line" if args.parameter_overrides else ""))
    for n, p in t.get("Parameters", {}).items():
        if p.get("Type", "").startswith("List") or p.get("Type") == "CommaDelimitedList":
            if n in params:
                params[n] = params[n].split(",")
    r = Resolver(t, params, stack, region)

    g = t.get("Globals", {}).get("Function", {})
    props = res.get("Properties", {})
    merged = {**g.get("Environment", {}).get("Variables", {}),
              **props.get("Environment", {}).get("Variables", {})}
    role = db_role(merged)
    env = {}
    for k, v in merged.items():
        val = r.value(v)
        if val is NO_VALUE:
            continue
        env[k] = ",".join(map(str, val)) if isinstance(val, list) else str(val)
    if r.unresolved:
        say(f"parameters without a value (placeholders used): {', '.join(sorted(r.unresolved))}")

    def override(k, v, why):
        if v is None:
            if k in env:
                say(f"override {k}: dropped ({why})")
                del env[k]
            return
        shown = "***" if k.endswith(("_KEY", "_TOKEN", "PASSWORD")) else v
        if k in ("DATABASE_URL",):
            shown = v.split("@")[-1] if "@" in v else v
            shown = f"postgres://…@{shown}"
        was = "" if k not in env else f" (was {env[k]})" if "ARN" in k or k in ("KEYRING", "DB_TLS", "DB_AUTH") else " (was set)"
        say(f"override {k}={shown}{was}: {why}")
        env[k] = v

    standins = os.environ.get("INVOKE_STANDINS_URL", "").rstrip("/")
    db_url = os.environ.get("INVOKE_DATABASE_URL")
    uses_db = any(k in env for k in ("DB_AUTH", "DB_HOST", "DB_SECRET_ARN"))
    if uses_db:
        for k in ("DB_SECRET_ARN", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER"):
            override(k, None, "the local database comes from DATABASE_URL")
        override("DB_AUTH", "password", "DATABASE_URL's own password")
        override("DB_TLS", "disable", "plain TCP to the loopback database")
        # The function's own role's login, as deployed (the template's DB_SECRET_ARN /
        # DB_USER say which): the local API set those logins up on its database.
        url, why = db_url or "", "the local database"
        dbname = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/")) if url else ""
        per_role = os.environ.get("INVOKE_DB_ROLES", "split") != "owner"
        if role in ("route", "reader") and url and per_role:
            suffix = "route" if role == "route" else "read"
            given = os.environ.get(f"INVOKE_{role.upper()}_DATABASE_URL")
            url = given or as_login(url, local_login_name(dbname, suffix))
            why = (f"the local database as the {role} role's login "
                   + ("(INVOKE_" + role.upper() + "_DATABASE_URL)" if given else
                      f"({local_login_name(dbname, suffix)}, set up by the local API)"))
        elif role == "owner":
            why = "the local database as its owner (migrate's role)"
        override("DATABASE_URL", url, why)
        # migrate sets up the other roles' logins: deployed from their secrets (password)
        # or as IAM users; locally the same logins the local API uses, same password.
        for k in ("DB_ROUTE_SECRET_ARN", "DB_READER_SECRET_ARN", "DB_ROUTE_USER", "DB_READER_USER"):
            override(k, None, "the local logins instead (below)")
        if role == "owner" and db_url and per_role:
            password = urllib.parse.unquote(urllib.parse.urlsplit(db_url).password or "")
            for k, suffix in (("ROUTE", "route"), ("READER", "read")):
                override(f"DB_{k}_USER", local_login_name(dbname, suffix), "the local login, as the local API names it")
                override(f"DB_{k}_PASSWORD", password, "the local logins share the owner's password")
    if "KEYRING" in env:
        override("KMS_KEY_ID", None, "no KMS locally")
        override("KEYRING", "local", "the local keyring (the local API's key)")
        if os.environ.get("LOCAL_KEYRING_KEY"):
            override("LOCAL_KEYRING_KEY", os.environ["LOCAL_KEYRING_KEY"], "from the environment")
        else:
            override("LOCAL_KEYRING_FILE", os.environ.get("INVOKE_KEYRING_FILE", str(ROOT / ".local/keyring.key")),
                     "the local API's dev key")
    providers = "VAPI_SECRET_ARN" in env or "TWILIO_MAIN_SECRET_ARN" in env
    if "VAPI_SECRET_ARN" in env:
        override("VAPI_SECRET_ARN", None, "Vapi's key from the environment instead")
        override("VAPI_PRIVATE_KEY", os.environ.get("VAPI_PRIVATE_KEY", LOCAL_VAPI_KEY),
                 "from the environment" if os.environ.get("VAPI_PRIVATE_KEY") else "the Vapi stand-in's key")
    if "TWILIO_MAIN_SECRET_ARN" in env:
        own = os.environ.get("TWILIO_MAIN_ACCOUNT_SID")
        override("TWILIO_MAIN_SECRET_ARN", None, "the main account from the environment instead")
        override("TWILIO_MAIN_ACCOUNT_SID", own or LOCAL_TWILIO_MAIN_SID,
                 "from the environment" if own else "the Twilio stand-in's main account")
        override("TWILIO_MAIN_AUTH_TOKEN", os.environ.get("TWILIO_MAIN_AUTH_TOKEN") if own else LOCAL_TWILIO_MAIN_TOKEN,
                 "from the environment" if own else "the Twilio stand-in's main account")
    if "TOKEN_FINGERPRINT_SECRET_ARN" in env:
        override("TOKEN_FINGERPRINT_SECRET_ARN", None, "the fingerprint key from the environment instead")
        override("TOKEN_FINGERPRINT_KEY", os.environ.get("TOKEN_FINGERPRINT_KEY", LOCAL_TOKEN_FINGERPRINT_KEY),
                 "from the environment" if os.environ.get("TOKEN_FINGERPRINT_KEY") else "the local API's key")
    # Every function that talks to a provider (save-credential checks a customer's own
    # Twilio credentials at Twilio, without the main account's secret): the stand-ins,
    # or the base URLs of the environment (as the local API takes them).
    if providers:
        for k, path, what in (("VAPI_BASE_URL", "/vapi", "the Vapi stand-in"),
                              ("TWILIO_BASE_URL", "/twilio/2010-04-01", "the Twilio stand-in"),
                              ("TWILIO_PRICING_BASE_URL", "/twilio-pricing/v1", "the Twilio Pricing stand-in"),
                              ("TWILIO_ACCOUNTS_BASE_URL", "/twilio-accounts/v1", "the Twilio Accounts stand-in")):
            override(k, os.environ.get(k) or f"{standins}{path}", "from the environment" if os.environ.get(k) else what)

    # The command line's --env / --unset come last (e.g. to show a failing start).
    for item in args.env:
        k, _, v = item.partition("=")
        override(k, v, "--env")
    for k in args.unset:
        override(k, None, "--unset")

    arch = args.arch or (props.get("Architectures") or g.get("Architectures") or ["x86_64"])[0]
    timeout = int(r.value(props.get("Timeout", g.get("Timeout", 3))))
    memory = int(r.value(props.get("MemorySize", g.get("MemorySize", 128))))
    name = f"{stack}-{args.logical_id}-local"
    # What Lambda sets in every function's environment.
    lam = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
        "_HANDLER": props.get("Handler", g.get("Handler", "bootstrap")),
        "LAMBDA_TASK_ROOT": os.environ.get("INVOKE_TASK_ROOT", "/var/task"),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        # The role's credentials, as Lambda hands them: dummies, nothing here calls AWS
        # (or only the emulator, AWS_ENDPOINT_URL).
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        lam["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
        say(f"AWS_ENDPOINT_URL={lam['AWS_ENDPOINT_URL']} (the AWS emulator, from the environment)")
    for k, v in lam.items():
        env.setdefault(k, v)

    pathlib.Path(args.out).write_text(json.dumps(env))
    print(f"ARCH={shlex.quote(arch)} TIMEOUT={timeout} MEMORY={memory} FUNCTION_NAME={shlex.quote(name)}")


if __name__ == "__main__":
    main()
