"""The DICOM network node: an adapter from DIMSE (pynetdicom) to the archive's services."""
