"""pgaudit.report"""
