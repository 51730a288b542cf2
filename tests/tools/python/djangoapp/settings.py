"""Settings of the tests' Django project: one app (`shop`), no contrib apps,
so `django_migrations` holds only shop's rows. The database is DATABASE_URL
as pgmaint hands it to a migrator: `postgresql://user@%2Fsocket%2Fdir:port/name`
(a socket directory percent-encoded in the host, as libpq reads it) or
`?host=/socket/dir`."""
import os
from urllib.parse import parse_qs, unquote, urlparse

url = urlparse(os.environ["DATABASE_URL"])
query = parse_qs(url.query)
# urlparse lowercases `hostname`; a socket directory keeps its case.
userinfo, _, hostport = url.netloc.rpartition("@")
host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": query.get("host", [unquote(host)])[0],
        "PORT": query.get("port", [port])[0],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
