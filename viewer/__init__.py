"""The web application: DICOMweb, the audit API and the browser UI (FastAPI)."""
