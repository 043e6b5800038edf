"""OHIF viewer v3 links and configuration: a study opened in OHIF through a DICOMweb server (e.g. Orthanc).

covidct does not serve OHIF itself: a site serves OHIF's built app (`scripts/fetch-ohif.sh` fetches
`@ohif/app` from npm; its ``dist/`` is static files) with an ``app-config.js`` whose data source is the
PACS's DICOMweb root (`ohif_app_config`), and `covidct serve --ohif-url URL` puts each study's viewer link
(`ohif_study_url`) into the API's job and worklist data as ``ohif_url``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

from covidct.errors import ConfigError

OHIF_URL_ENV = "COVIDCT_OHIF_URL"
"""Environment variable read by `covidct serve` when ``--ohif-url`` is not given."""
VIEWER_ROUTE = "viewer"
"""OHIF's basic (longitudinal) viewer mode: it lists and overlays DICOM SEG and shows SR measurements."""
DICOM_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_CHARS = 64
DATA_SOURCE_NAME = "dicomweb"
MAX_WEB_WORKERS = 3


def check_ohif_root(url: str) -> str:
    """``url`` without trailing slashes, or a `ConfigError` unless it is an absolute http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"The OHIF URL must be an absolute http(s) URL of the viewer's root without a "
                          f"query, e.g. https://pacs.example.org/ohif, not {url!r}.")
    return url.strip().rstrip("/")


def ohif_study_url(ohif_root: str, study_uid: str | None) -> str | None:
    """The OHIF viewer URL of one study, or None when the study has no valid StudyInstanceUID."""
    if not study_uid or len(study_uid) > MAX_UID_CHARS or not DICOM_UID.match(study_uid):
        return None
    return f"{check_ohif_root(ohif_root)}/{VIEWER_ROUTE}?StudyInstanceUIDs={quote(study_uid, safe='.')}"


def check_dicomweb_root(root: str) -> str:
    """``root`` without trailing slashes, or a `ConfigError` unless it is an absolute http(s) URL or a path
    on OHIF's own origin (``/dicom-web``)."""
    parts = urlsplit(root.strip())
    same_origin = not parts.scheme and not parts.netloc and parts.path.rstrip("/").startswith("/")
    absolute = parts.scheme in ("http", "https") and bool(parts.netloc)
    if not (same_origin or absolute) or parts.query or parts.fragment:
        raise ConfigError(f"The DICOMweb root must be an absolute http(s) URL (https://pacs.example.org/"
                          f"dicom-web) or a path on OHIF's origin (/dicom-web), not {root!r}.")
    return root.strip().rstrip("/")


def dicomweb_data_source(dicomweb_root: str, *, friendly_name: str = "PACS (DICOMweb)") -> dict[str, Any]:
    """An OHIF DICOMweb data source for ``dicomweb_root`` (QIDO-RS and WADO-RS at the same root, as
    Orthanc's DICOMweb plugin serves them; may be a path on OHIF's own origin, e.g. ``/dicom-web``)."""
    root = check_dicomweb_root(dicomweb_root)
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": DATA_SOURCE_NAME,
        "configuration": {
            "friendlyName": friendly_name, "name": DATA_SOURCE_NAME,
            "qidoRoot": root, "wadoRoot": root, "wadoUriRoot": root,
            "qidoSupportsIncludeField": False, "imageRendering": "wadors", "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True, "supportsFuzzyMatching": False, "supportsWildcard": True,
            "staticWado": False, "singlepart": "bulkdata,video", "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        },
    }


def ohif_app_config(dicomweb_root: str, *, router_basename: str = "/") -> str:
    """The text of OHIF's ``app-config.js`` with one DICOMweb data source at ``dicomweb_root``.

    The config is JSON (valid JavaScript); the start-up "investigational use" dialog is off because
    covidct's own pages carry the research-use statement.
    """
    config = {
        "routerBasename": router_basename, "extensions": [], "modes": [], "customizationService": {},
        "showStudyList": True, "maxNumberOfWebWorkers": MAX_WEB_WORKERS,
        "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": False,
        "showLoadingIndicator": True, "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": DATA_SOURCE_NAME, "dataSources": [dicomweb_data_source(dicomweb_root)],
    }
    return f"/* written by covidct.service.ohif */\nwindow.config = {json.dumps(config, indent=2)};\n"
