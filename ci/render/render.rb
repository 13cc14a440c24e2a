#!/usr/bin/env ruby
# frozen_string_literal: true

# Renders a BOSH release's job templates for one instance of a deployment with
# the director's own template library (Bosh::Common::Template, from
# ../shared/tools/bosh-common/lib or BOSH_COMMON_LIB), so that tests and the
# local cluster render exactly as the director does.
#
#   ci/render/render.rb --release release --manifest ci/deployments/ha.yml \
#                       --instance postgres/0 --out DIR
#   ci/render/render.rb --release postgres-dev.tgz ...    (jobs from a release tarball,
#                                                          or from one unpacked)
#   ci/render/render.rb --release release --manifest M --list
#
# For each job of the instance it writes DIR/<job>/<destination> for every
# template in the job's spec, and DIR/<job>/monit (files under bin/ are
# executable). Evaluation is the library's: EvaluationContext with ERB's
# trim mode '-', the job's properties bound as the director binds them
# (PropertyHelper#copy_property over the spec, defaults included).
#
# What the library leaves to the director's deployment planner is done here,
# for the manifests the tests use: instance addresses (the network's
# static_ips in order, else 10.244.<group number>.<index + 2>), ids, azs,
# bootstrap (index 0), and links (explicit `consumes: {name: {from: ...}}`,
# else by type, preferring a provider in the same instance group; the link's
# properties are the provider's, bound the same way and filtered by its
# `provides` declaration).
#
# Exit status 1 with one line naming the instance, job and template on any
# rendering error (never the receiver Ruby appends to a NameError, which would
# print every property, passwords included).

BOSH_COMMON_LIB = ENV.fetch('BOSH_COMMON_LIB') { File.expand_path('../../../shared/tools/bosh-common/lib', __dir__) }
$LOAD_PATH.unshift(BOSH_COMMON_LIB)

require 'erb'
require 'fileutils'
require 'optparse'
require 'tmpdir'
require 'yaml'
begin
  require 'bosh/common'
  require 'bosh/common/template'
rescue LoadError => e
  warn "render: cannot load the director's template library from #{BOSH_COMMON_LIB} " \
       "(set BOSH_COMMON_LIB; it needs Debian's ruby-activesupport): #{e.message}"
  exit 1
end

module Render
  class Error < StandardError; end

  extend Bosh::Common::Template::PropertyHelper

  # The job's view of the properties: each one its spec declares, from the
  # manifest or else the spec's default, as the director binds them.
  def self.bind_properties(job_spec, given)
    (job_spec['properties'] || {}).each_with_object({}) do |(name, definition), bound|
      copy_property(bound, given || {}, name, (definition || {})['default'])
    end
  end

  # The first line of an error, without the receiver Ruby appends to a NameError.
  def self.first_line(error)
    error.message.lines.first.to_s.sub(/ for #<.*/m, '').sub(/ for an instance of .*/m, '').strip
  end

  # Job specs and templates, from a release directory or a release tarball.
  class JobSource
    # PATH: a release directory (jobs/NAME/spec), a release tarball, or an
    # unpacked release tarball (jobs/NAME.tgz).
    def self.open(path)
      if File.file?(path)
        unpacked = scratch_dir
        system('tar', '-xzf', path, '-C', unpacked, '--wildcards', '*jobs/*.tgz', exception: true)
        path = unpacked
      end
      raise Error, "no release at #{path}" unless File.directory?(path)

      tarballs = Dir[File.join(path, 'jobs', '*.tgz')]
      return new(path) if tarballs.empty?

      dir = scratch_dir
      tarballs.each do |tgz|
        job_dir = File.join(dir, 'jobs', File.basename(tgz, '.tgz'))
        FileUtils.mkdir_p(job_dir)
        system('tar', '-xzf', tgz, '-C', job_dir, exception: true)
        # A release tarball's job.MF is the job's spec.
        FileUtils.mv(File.join(job_dir, 'job.MF'), File.join(job_dir, 'spec'))
      end
      new(dir)
    rescue RuntimeError => e
      raise Error, "cannot read the jobs of #{path}: #{e.message}"
    end

    def self.scratch_dir
      dir = Dir.mktmpdir('render-release.')
      at_exit { FileUtils.rm_rf(dir) }
      dir
    end

    def initialize(dir)
      @dir = dir
      @specs = {}
    end

    def spec(job_name)
      @specs[job_name] ||= begin
        path = File.join(job_dir(job_name), 'spec')
        raise Error, "no job '#{job_name}' in #{@dir}/jobs" unless File.exist?(path)

        YAML.safe_load_file(path, aliases: true)
      end
    end

    def job_dir(job_name)
      File.join(@dir, 'jobs', job_name)
    end
  end

  # A deployment manifest, planned as far as rendering needs.
  class Deployment
    def initialize(jobs, manifest)
      @jobs = jobs
      @manifest = manifest
      @groups = manifest.fetch('instance_groups')
    end

    def instance_names
      @groups.flat_map { |group| (0...group.fetch('instances')).map { |i| "#{group['name']}/#{i}" } }
    end

    # Renders every template of every job of `instance` ("group/index") into out_dir.
    def render_instance(instance, out_dir)
      group_name, index = instance.split('/')
      group = @groups.find { |g| g['name'] == group_name } or raise Error, "no instance group '#{group_name}'"
      index = Integer(index)
      raise Error, "#{instance}: the group has #{group['instances']} instances" unless index < group['instances']

      group.fetch('jobs').each { |job| render_job(group, index, job, out_dir) }
    rescue ArgumentError => e
      raise Error, "#{instance}: #{e.message}"
    end

    private

    def render_job(group, index, job, out_dir)
      job_spec = @jobs.spec(job['name'])
      context = template_spec(group, index, job, job_spec)
      (job_spec['templates'] || {}).each do |source, destination|
        render_file(context, File.join('templates', source), destination, out_dir, "#{group['name']}/#{index} job #{job['name']} template #{source}")
      end
      render_file(context, 'monit', 'monit', out_dir, "#{group['name']}/#{index} job #{job['name']} monit") \
        if File.exist?(File.join(@jobs.job_dir(job['name']), 'monit'))
    end

    def render_file(spec_hash, source, destination, out_dir, what)
      job = spec_hash['job']['name']
      path = File.join(@jobs.job_dir(job), source)
      context = Bosh::Common::Template::EvaluationContext.new(spec_hash, nil)
      erb = ERB.new(File.read(path), trim_mode: '-')
      erb.filename = path
      text = erb.result(context.get_binding)
      target = File.join(out_dir, job, destination)
      FileUtils.mkdir_p(File.dirname(target))
      File.write(target, text)
      File.chmod(destination.start_with?('bin/') ? 0o755 : 0o644, target)
    rescue StandardError, ScriptError => e
      raise Error, "#{what}: #{Render.first_line(e)}"
    end

    # The hash the director hands EvaluationContext for one job of one instance.
    def template_spec(group, index, job, job_spec)
      address = address_of(group, index)
      {
        'deployment' => @manifest['name'], 'name' => group['name'], 'index' => index,
        'id' => instance_id(group, index), 'az' => az_of(group, index), 'bootstrap' => index.zero?,
        'address' => address, 'ip' => address,
        'networks' => { network_of(group) => { 'ip' => address, 'default' => %w[dns gateway] } },
        'job' => { 'name' => job['name'] },
        'properties' => Render.bind_properties(job_spec, job['properties']),
        'links' => links_for(group, job, job_spec),
      }
    end

    def network_of(group)
      (group['networks'] || [{ 'name' => 'default' }]).first['name']
    end

    def address_of(group, index)
      static = (group['networks'] || []).flat_map { |n| n['static_ips'] || [] }
      static[index] || "10.244.#{@groups.index(group)}.#{index + 2}"
    end

    def instance_id(group, index)
      format('%08x-0000-4000-8000-%012x', @groups.index(group), index)
    end

    def az_of(group, index)
      azs = group['azs'] || ['z1']
      azs[index % azs.length]
    end

    def links_for(group, job, job_spec)
      (job_spec['consumes'] || []).each_with_object({}) do |consumed, links|
        provider = link_provider(group, job, consumed)
        links[consumed['name']] = provider if provider
      end
    end

    def link_provider(group, job, consumed)
      explicit = (job['consumes'] || {})[consumed['name']]
      return nil if explicit == 'nil'

      candidates = providers_of(consumed['type'], explicit && explicit['from'])
      chosen = candidates.find { |c| c[:group] == group } || candidates.first
      if chosen.nil?
        return nil if consumed['optional']

        raise Error, "job #{job['name']}: no provider for link '#{consumed['name']}' (type #{consumed['type']})"
      end
      link_spec(chosen)
    end

    # Every provider of `type` (or the one named `from`): its group, job and provides entry.
    def providers_of(type, from)
      @groups.flat_map do |group|
        group.fetch('jobs').flat_map do |job|
          (@jobs.spec(job['name'])['provides'] || []).filter_map do |provided|
            alias_name = ((job['provides'] || {})[provided['name']] || {})['as'] || provided['name']
            matches = from ? alias_name == from : provided['type'] == type
            { group: group, job: job, provided: provided } if matches
          end
        end
      end
    end

    # A link as the director hands it to EvaluationContext.
    def link_spec(chosen)
      group = chosen[:group]
      bound = Render.bind_properties(@jobs.spec(chosen[:job]['name']), chosen[:job]['properties'])
      shared = (chosen[:provided]['properties'] || []).each_with_object({}) do |name, result|
        Render.copy_property(result, bound, name)
      end
      {
        'deployment_name' => @manifest['name'], 'instance_group' => group['name'],
        'default_network' => network_of(group), 'domain' => 'bosh',
        'properties' => shared,
        'instances' => (0...group['instances']).map do |i|
          { 'name' => group['name'], 'index' => i, 'id' => instance_id(group, i), 'az' => az_of(group, i),
            'address' => address_of(group, i), 'bootstrap' => i.zero? }
        end,
      }
    end
  end

  def self.main(argv)
    options = { release: 'release' }
    OptionParser.new do |o|
      o.banner = 'usage: render.rb --release DIR|TARBALL --manifest FILE (--instance GROUP/INDEX --out DIR | --list)'
      o.on('--release PATH') { |v| options[:release] = v }
      o.on('--manifest FILE') { |v| options[:manifest] = v }
      o.on('--instance NAME') { |v| options[:instance] = v }
      o.on('--out DIR') { |v| options[:out] = v }
      o.on('--list') { options[:list] = true }
    end.parse!(argv)
    raise Error, '--manifest is required' unless options[:manifest]

    manifest = YAML.safe_load_file(options[:manifest], aliases: true)
    deployment = Deployment.new(JobSource.open(options[:release]), manifest)
    if options[:list]
      puts deployment.instance_names
    else
      raise Error, '--instance and --out are required' unless options[:instance] && options[:out]

      deployment.render_instance(options[:instance], options[:out])
    end
  rescue Error, OptionParser::ParseError, Psych::SyntaxError, Errno::ENOENT, KeyError => e
    warn "render: #{e.message}"
    exit 1
  end
end

Render.main(ARGV) if $PROGRAM_NAME == __FILE__
