"""Regulator networking (联网): MT/T 1201.1-style data files, their durable upload, a validator.

- :mod:`networking.format` — the file format (names, separators, field counts, times);
- :mod:`networking.files` — CDDY / FZDY definitions, CDSS / FZSS real-time state, TJSJ
  5-minute statistics and YCBJ abnormal events, built from the configuration, the readings
  (:mod:`networking.live`) and the alert record;
- :mod:`networking.queue` — the archive and the durable upload queue (SQLite in state_dir);
- :mod:`networking.upload` — SFTP (asyncssh) and FTP (ftplib) targets;
- :mod:`networking.worker` — the service's thread that writes the files and uploads them;
- :mod:`networking.validate` — ``jinmei networking check``: any mine's files, every violation.
"""
